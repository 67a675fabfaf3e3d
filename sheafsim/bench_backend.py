"""Array-backend benchmark of ``sheafsim bench``: the heat step on torch CPU.

The heat step of the large CPU benchmark network runs on numpy float64 (the
baseline), numpy float32, torch CPU float64 and torch CPU float32 in one
process, with one BLAS or torch thread each. Every time is set against the
numpy float64 step of the same repeat.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from sheafsim.backend import ArrayBackend, to_numpy
from sheafsim.bench import BenchResult
from sheafsim.dynamics import diffuse, initial_state
from sheafsim.neural import NeuralSheaf

__all__ = ["bench_torch_cpu_step", "BACKEND_CASES"]

# The network and columns of the large case of the heat_step benchmark.
WIDTHS = [64, 128, 128, 10]
COLUMNS = 1797

BACKEND_CASES = (
    ArrayBackend("numpy", "cpu", "float64"),
    ArrayBackend("numpy", "cpu", "float32"),
    ArrayBackend("torch", "cpu", "float64"),
    ArrayBackend("torch", "cpu", "float32"),
)
"""Backends timed by :func:`bench_torch_cpu_step`. The first is the baseline."""


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Limit numpy's BLAS and torch to one thread, and restore both afterwards."""
    import torch

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(torch_threads)


def _time_steps(
    net: NeuralSheaf, x: np.ndarray, state: dict[str, Any], steps: int, backend: Any
) -> tuple[float, np.ndarray]:
    """Return the seconds per heat step and the final output as float64."""
    with warnings.catch_warnings():
        # tol = 1e-300 requests a fixed number of steps, also in float32.
        warnings.simplefilter("ignore", UserWarning)
        result = diffuse(
            net,
            x,
            state=state,
            tol=1e-300,
            max_steps=steps,
            check_step=False,
            record_crossings=False,
            backend=backend,
        )
    output = np.asarray(to_numpy(result.output), dtype=np.float64)
    return result.wall_time_s / result.steps, output


def bench_torch_cpu_step(quick: bool = False) -> BenchResult:
    """Time the Euler heat step on each backend of :data:`BACKEND_CASES`."""
    import torch

    net = NeuralSheaf.random(WIDTHS, seed=0)
    x = np.random.default_rng(0).normal(size=(WIDTHS[0], COLUMNS))
    state = initial_state(net, x, "random", seed=0)
    steps = 10 if quick else 300
    repeats = 2 if quick else 5
    times: dict[ArrayBackend, list[float]] = {b: [] for b in BACKEND_CASES}
    ratios: dict[ArrayBackend, list[float]] = {b: [] for b in BACKEND_CASES}
    gaps: dict[ArrayBackend, float] = {}
    with single_thread():
        for backend in BACKEND_CASES:
            # A few untimed steps load torch's kernels and warm the allocators.
            _time_steps(net, x, state, 3, backend)
        for repeat in range(repeats):
            # Rotate the order, so a change of machine load hits every backend.
            order = BACKEND_CASES[repeat % 4 :] + BACKEND_CASES[: repeat % 4]
            per_step: dict[ArrayBackend, float] = {}
            outputs: dict[ArrayBackend, np.ndarray] = {}
            for backend in order:
                per_step[backend], outputs[backend] = _time_steps(
                    net, x, state, steps, backend
                )
            baseline = per_step[BACKEND_CASES[0]]
            for backend in BACKEND_CASES:
                times[backend].append(per_step[backend])
                ratios[backend].append(per_step[backend] / baseline)
                gap = np.max(np.abs(outputs[backend] - outputs[BACKEND_CASES[0]]))
                gaps[backend] = max(gaps.get(backend, 0.0), float(gap))
    rows = []
    for backend in BACKEND_CASES:
        spread = ratios[backend]
        rows.append(
            [
                backend.name,
                backend.dtype,
                f"{statistics.median(times[backend]) * 1e3:.2f}",
                f"{statistics.median(spread):.2f}x",
                f"{min(spread):.2f}x-{max(spread):.2f}x",
                f"{gaps[backend]:.1e}",
            ]
        )
    return BenchResult(
        "torch_cpu_step",
        f"Heat step on torch CPU against numpy ({WIDTHS}, {COLUMNS} columns)",
        [
            "library",
            "dtype",
            "heat step (ms)",
            "ratio to numpy float64",
            "ratio range",
            "max abs(output - numpy float64)",
        ],
        rows,
        [
            f"One `diffuse` Euler step (crossings not recorded) of the random "
            f"network {WIDTHS} (seed 0) on {COLUMNS} random input columns, the "
            "large case of the heat-step benchmark, converted with the `backend` "
            "and `dtype` options of `diffuse`. Every backend runs with one thread: "
            "numpy's BLAS is limited with threadpoolctl and torch with "
            "`torch.set_num_threads(1)`. "
            f"Each of {repeats} repeats times {steps} steps of every backend from "
            "the same random stalks, in an order rotated between repeats. A ratio "
            "divides a step by the numpy float64 step of the same repeat, and the "
            "table gives the medians and the range over the repeats. The last "
            f"column compares the outputs after the {steps} steps with numpy "
            f"float64. torch {torch.__version__}.",
        ],
    )
