"""Benchmarks behind ``sheafsim bench``, reported as ratios to in-process baselines.

Every timing is the median of several repeats and is set against a baseline
measured in the same process (the plain numpy forward pass for heat steps), so
the ratios carry over between machines better than the absolute times. The
report names the command and the machine.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sheafsim.dynamics import diffuse
from sheafsim.neural import NeuralSheaf

__all__ = ["BenchResult", "BENCHMARKS", "run_benchmarks", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class BenchResult:
    """One benchmark: a Markdown table with a title and notes.

    ``load_average`` is the 1-minute load average of the machine before and
    after the benchmark ran, where the platform reports one.
    """

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    load_average: tuple[float, float] | None = None


def _median_time(function: Callable[[], Any], repeats: int, number: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def _bare_forward(net: NeuralSheaf, x: np.ndarray) -> np.ndarray:
    a = x
    for w, b in zip(net.weights[:-1], net.biases[:-1], strict=True):
        a = np.maximum(w @ a + b, 0.0)
    return net.weights[-1] @ a + net.biases[-1]


def bench_heat_step(quick: bool = False) -> BenchResult:
    """Time per Euler heat step against the forward pass, on two networks."""
    cases = [([2, 30, 1], 300, 100.0, None), ([64, 128, 128, 10], 1797, None, 2.5)]
    rows = []
    steps = 40 if quick else 2000
    for widths, batch, target_us, target_ratio in cases:
        net = NeuralSheaf.random(widths, seed=0)
        x = np.random.default_rng(0).normal(size=(widths[0], batch))

        def run_forward(net: NeuralSheaf = net, x: np.ndarray = x) -> None:
            _bare_forward(net, x)

        # Repeat the forward pass for about 0.2 s per sample.
        number = max(1, int(0.2 / max(_median_time(run_forward, 1, 3), 1e-6)))
        forward = _median_time(run_forward, 5, number)
        timings: dict[bool, float] = {}
        for crossings in (False, True):
            samples = []
            for _ in range(3):
                result = diffuse(
                    net,
                    x,
                    tol=1e-300,
                    max_steps=steps,
                    check_step=False,
                    record_crossings=crossings,
                )
                samples.append(result.wall_time_s / result.steps)
            timings[crossings] = statistics.median(samples)
        for crossings, per_step in timings.items():
            target = []
            if target_us is not None:
                target.append(f"<= {target_us:g} us")
            if target_ratio is not None:
                target.append(f"<= {target_ratio:g}x")
            rows.append(
                [
                    str(widths),
                    batch,
                    "yes" if crossings else "no",
                    f"{forward * 1e6:.1f}",
                    f"{per_step * 1e6:.1f}",
                    f"{per_step / forward:.2f}x",
                    ", ".join(target),
                ]
            )
    return BenchResult(
        "heat_step",
        "Heat step against the forward pass (Euler, float64, numpy)",
        [
            "network",
            "columns",
            "crossings recorded",
            "forward pass (us)",
            "heat step (us)",
            "ratio",
            "target",
        ],
        rows,
        [
            "The forward pass is the bare numpy loop `maximum(W @ a + b, 0)`; the heat "
            "step is one `diffuse` Euler step including the stopping test. The "
            "authors' implementation takes 4.0x the forward pass on the large net "
            "and about 400 us per step on the small net (2-core machine).",
        ],
    )


def bench_steps_to_tol(quick: bool = False) -> BenchResult:
    """Steps to reach tol for Euler and the momentum integrators."""
    from sheafsim.integrators import INTEGRATORS

    rng = np.random.default_rng(0)
    cases = [
        ("[2, 30, 1] x 300", NeuralSheaf.random([2, 30, 1], seed=0), 300, 0.05, 1e-9),
        (
            "[2, 6, 4, 4, 1] x 2",
            NeuralSheaf.random([2, 6, 4, 4, 1], seed=1),
            2,
            0.05,
            1e-10,
        ),
        (
            "[64, 128, 128, 10] x 256",
            NeuralSheaf.random([64, 128, 128, 10], seed=2),
            256,
            0.05,
            1e-9,
        ),
    ]
    if quick:
        cases = [
            ("[2, 30, 1] x 8", NeuralSheaf.random([2, 30, 1], seed=0), 8, 0.05, 1e-6),
            cases[1],
        ]
    rows = []
    for label, net, batch, dt, tol in cases:
        x = rng.normal(size=(net.widths[0], batch))
        forward = net.forward(x).output
        euler_steps = None
        for integrator in INTEGRATORS:
            result = diffuse(
                net, x, dt=dt, tol=tol, integrator=integrator, max_steps=400_000
            )
            if integrator == "euler":
                euler_steps = result.steps
            error = float(np.max(np.abs(result.output - forward)))
            rows.append(
                [
                    label,
                    dt,
                    f"{tol:g}",
                    integrator,
                    result.status,
                    result.steps,
                    f"{euler_steps / result.steps:.1f}x" if euler_steps else "",
                    f"{error:.1e}",
                    f"{result.wall_time_s:.2f}",
                ]
            )
    return BenchResult(
        "steps_to_tol",
        "Steps to tolerance by integrator (random initial stalks, seed 0)",
        [
            "network",
            "dt",
            "tol",
            "integrator",
            "status",
            "steps",
            "fewer steps than Euler",
            "max abs(output - forward)",
            "wall (s)",
        ],
        rows,
        ["heavy_ball uses its default momentum 0.9."],
    )


def bench_torch_cpu_step(quick: bool = False) -> BenchResult:
    """Heat step on torch CPU in float64 and float32 against numpy float64."""
    from sheafsim import bench_backend

    return bench_backend.bench_torch_cpu_step(quick)


def bench_actor_round(quick: bool = False) -> BenchResult:
    """Synchronous Ray round against the in-process step on the digits network."""
    from sheafsim import bench_actors

    return bench_actors.bench_actor_round(quick)


def bench_actor_messages(quick: bool = False) -> BenchResult:
    """Messages per second per actor of an actor run against a bare actor loop."""
    from sheafsim import bench_actors

    return bench_actors.bench_actor_messages(quick)


def bench_async_slow_vertex(quick: bool = False) -> BenchResult:
    """Time to tol of the asynchronous schedule against the synchronous one."""
    from sheafsim import bench_actors

    return bench_actors.bench_async_slow_vertex(quick)


def bench_train_step(quick: bool = False) -> BenchResult:
    """Time per joint training step against the forward pass."""
    from sheafsim import bench_training

    return bench_training.bench_train_step(quick)


def bench_train_recipe(quick: bool = False) -> BenchResult:
    """Wall time of the paraboloid training recipe and its baseline."""
    from sheafsim import bench_training

    return bench_training.bench_train_recipe(quick)


def bench_actor_train_round(quick: bool = False) -> BenchResult:
    """Actor training round against the in-process training step."""
    from sheafsim import bench_training

    return bench_training.bench_actor_train_round(quick)


# The actor, training and torch benchmarks import Ray, scikit-learn and torch
# only when they run.
BENCHMARKS: dict[str, Callable[[bool], BenchResult]] = {
    "heat_step": bench_heat_step,
    "steps_to_tol": bench_steps_to_tol,
    "torch_cpu_step": bench_torch_cpu_step,
    "actor_round": bench_actor_round,
    "actor_messages": bench_actor_messages,
    "async_slow_vertex": bench_async_slow_vertex,
    "train_step": bench_train_step,
    "train_recipe": bench_train_recipe,
    "actor_train_round": bench_actor_train_round,
}


def machine_description() -> str:
    """Return one line naming the CPU, core count, Python and numpy."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def run_benchmarks(
    names: list[str] | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Run the named benchmarks (all by default) and return their tables."""
    selected = names or list(BENCHMARKS)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        from sheafsim.errors import InvalidValueError

        raise InvalidValueError(
            f"unknown benchmark {unknown[0]!r}; choose from {sorted(BENCHMARKS)}"
        )
    results = []
    for name in selected:
        if progress:
            progress(f"running benchmark {name}")
        before = _load_average()
        result = BENCHMARKS[name](quick)
        after = _load_average()
        if before is not None and after is not None:
            result.load_average = (before, after)
        results.append(result)
    return results


def _load_average() -> float | None:
    """Return the 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _table(result: BenchResult) -> str:
    lines = [
        "| " + " | ".join(result.columns) + " |",
        "|" + "|".join("---" for _ in result.columns) + "|",
    ]
    for row in result.rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_report(results: list[BenchResult], path: Path, command: str) -> None:
    """Write the Markdown report, replacing the sections of the benchmarks run.

    Sections of other benchmarks already in the file are kept, so a partial run
    (``--only``) does not erase earlier results.
    """
    sections: dict[str, str] = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines(keepends=True):
            if line.startswith("<!-- bench:"):
                current = line.strip()[len("<!-- bench:") : -len("-->")].strip()
                sections[current] = ""
            elif current is not None:
                sections[current] += line
    stamp = time.strftime("%Y-%m-%d")
    for result in results:
        body = [f"## {result.title}", ""]
        measured = f"Measured {stamp} with `{command}` on {machine_description()}"
        if result.load_average is not None:
            before, after = result.load_average
            measured += (
                f", 1-minute load average {before:.1f} before and {after:.1f} after"
            )
        body.append(measured + ".")
        body += ["", _table(result), ""]
        body += [note + "\n" for note in result.notes]
        sections[result.name] = "\n".join(body) + "\n"
    order = list(BENCHMARKS) + [n for n in sections if n not in BENCHMARKS]
    text = [HEADER]
    for name in order:
        if name in sections:
            text.append(f"<!-- bench:{name} -->\n" + sections[name].rstrip() + "\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(text).rstrip() + "\n")


HEADER = """# Benchmarks

Written by `sheafsim bench`; rerun it to refresh a section. Times are medians
over repeats in one process, and each is set against a baseline timed in the same
process. Absolute times depend on the machine named in each section.

Every number below was measured on CPUs, with numpy and, in `torch_cpu_step`,
with torch's CPU build. The CUDA path (`backend = "torch"`, `device = "cuda"`)
is untested on GPU hardware: no number here comes from a GPU. On a machine with
one CUDA GPU, run

```bash
python examples/gpu_check.py gpu_check.json
```

to check it. The script compares CUDA float64 with numpy on the reference cases
and the digits network, runs a short diffusion on CUDA vertex actors, times the
heat step against the forward pass on a [1024, 4096, 4096, 1024] network, and
writes the results to `gpu_check.json`. It starts no part after 270 s, which
should keep it under 5 minutes, but its run time on a GPU has not been measured.

The actor benchmarks (`actor_round`, `actor_messages`, `async_slow_vertex`)
start a local single-node Ray instance. Other processes on the machine slow
them down, so each section gives the 1-minute load average before and after.

"""


def main_command_line() -> str:
    """Return the command line of this process, for the report."""
    return " ".join(["sheafsim", *sys.argv[1:]]) if sys.argv else "sheafsim bench"
