"""Check sheafsim's CUDA path on a machine with one GPU and write a JSON report.

    python examples/gpu_check.py [OUT.json] [--cpu] [--quick] [--budget-s S]

Run it from the repository root; the report goes to ``gpu_check.json`` unless
OUT.json is given. Five parts, each recorded with its own ``error`` (null when
it passed) and ``time_s``, so one failure does not hide the others:

``environment``
    torch, CUDA and sheafsim versions, the device name and its total memory.
``reference_cases``
    torch CUDA float64 against numpy on every reference inference case of
    ``tests/reference`` (largest output difference, step counts).
``digits``
    the scikit-learn digits network of ``examples/digits.toml`` diffused on
    CUDA float64 and on numpy, each compared with ``predict_proba``.
``actors``
    a short diffusion on CUDA vertex actors against numpy in process.
``heat_step_timing``
    heat step against forward pass on a [1024, 4096, 4096, 1024] network with
    4096 columns in float32 and float64 on CUDA, and the same ratio with numpy
    on the CPU for a smaller network.

The report is rewritten after every part, so a run that is stopped keeps the
parts it finished. A part that would start after ``--budget-s`` seconds (default
270) is skipped, to keep the whole run under 5 minutes.

NOTE: the CUDA mode has not run on a GPU yet. The 270 s budget rests on
estimated part times (the reference cases take about 75 000 diffusion steps in
all), and a part that has started is not interrupted.

``--cpu`` runs every part on torch's CPU build instead of CUDA, with smaller
networks and one torch and BLAS thread in this process, so the script can be
tested without a GPU on a shared machine. ``--quick`` shortens the digits, actor and
timing parts further.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

DEFAULT_BUDGET_S = 270.0

# Timing sizes (widths, columns): the GPU case, the numpy CPU case, and the
# torch CPU cases of --cpu without and with --quick.
CUDA_TIMING = ([1024, 4096, 4096, 1024], 4096)
NUMPY_TIMING = ([256, 1024, 1024, 256], 1024)
CPU_TIMING = ([256, 1024, 1024, 256], 1024)
CPU_QUICK_TIMING = ([64, 256, 256, 64], 256)


class Report:
    """The JSON report: parts run in order against one time budget."""

    def __init__(self, path: Path, budget_s: float, mode: dict[str, Any]) -> None:
        self.path = path
        self.budget_s = budget_s
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "script": "examples/gpu_check.py",
            **mode,
            "budget_s": budget_s,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def remaining_s(self) -> float:
        """Return the seconds left of the budget."""
        return self.budget_s - (time.perf_counter() - self.started)

    def run(self, name: str, part: Callable[[Report], dict[str, Any]]) -> None:
        """Run one part, store its result or its error, and rewrite the file."""
        say(f"{name}: starting ({self.remaining_s():.0f} s of the budget left)")
        start = time.perf_counter()
        if self.remaining_s() <= 0:
            result: dict[str, Any] = {"error": "skipped: the time budget is spent"}
        else:
            try:
                result = part(self)
                result.setdefault("error", None)
            except Exception as error:  # noqa: BLE001 - the report records any failure
                result = {
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(limit=8),
                }
        result["time_s"] = round(time.perf_counter() - start, 3)
        self.data[name] = result
        status = "ok" if result["error"] is None else f"error: {result['error']}"
        say(f"{name}: {status} ({result['time_s']:.1f} s)")
        self.write()

    def write(self) -> None:
        """Write the report through a temporary file, so readers see it whole."""
        parts = [value for value in self.data.values() if isinstance(value, dict)]
        self.data["ok"] = all(part.get("error") is None for part in parts)
        self.data["total_s"] = round(time.perf_counter() - self.started, 3)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        temporary.replace(self.path)


def say(message: str) -> None:
    print(f"gpu_check: {message}", flush=True)


def device_backend(report: Report, dtype: str = "float64") -> Any:
    """Return the torch backend of the checked device."""
    from sheafsim.backend import ArrayBackend

    return ArrayBackend("torch", report.data["device"], dtype)


def max_difference(a: Any, b: Any) -> float:
    """Return the largest absolute difference of two arrays on any backend."""
    from sheafsim.backend import to_numpy

    first = np.asarray(to_numpy(a), dtype=np.float64)
    second = np.asarray(to_numpy(b), dtype=np.float64)
    return float(np.max(np.abs(first - second)))


def check_environment(report: Report) -> dict[str, Any]:
    import torch

    import sheafsim

    result: dict[str, Any] = {
        "sheafsim_version": sheafsim.__version__,
        "torch_version": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
    }
    if report.data["device"] == "cpu":
        result["device_name"] = platform.processor() or platform.machine()
        result["device_total_memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf(
            "SC_PHYS_PAGES"
        )
        return result
    device_backend(report).check_device()
    properties = torch.cuda.get_device_properties(0)
    result.update(
        device_name=torch.cuda.get_device_name(0),
        device_total_memory_bytes=int(properties.total_memory),
        device_count=torch.cuda.device_count(),
        cuda_runtime_version=torch.version.cuda,
        matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
    )
    return result


def check_reference_cases(report: Report) -> dict[str, Any]:
    import reference_cases

    import sheafsim as ss

    backend = device_backend(report)
    cases = []
    for name in reference_cases.names("inference"):
        if report.remaining_s() <= 0:
            cases.append({"name": name, "error": "skipped: the time budget is spent"})
            continue
        case = reference_cases.load(name)
        net = reference_cases.network(case)
        x = np.array(case["x"])
        options = reference_cases.diffuse_kwargs(case)
        start = time.perf_counter()
        expected = ss.diffuse(net, x, **options)
        numpy_s = time.perf_counter() - start
        start = time.perf_counter()
        result = ss.diffuse(net, x, backend=backend, **options)
        device_s = time.perf_counter() - start
        state_difference = max(
            max_difference(result.state[v], expected.state[v])
            for v in net.free_vertices
        )
        cases.append(
            {
                "name": name,
                "status_numpy": expected.status,
                "status_device": result.status,
                "steps_numpy": expected.steps,
                "steps_device": result.steps,
                "max_abs_output_difference": max_difference(
                    result.output, expected.output
                ),
                "max_abs_state_difference": state_difference,
                "max_abs_output_error_vs_reference": max_difference(
                    result.output, case["expected"]["output"]
                ),
                "numpy_s": round(numpy_s, 3),
                "device_s": round(device_s, 3),
            }
        )
        say(
            f"  {name}: {result.steps} steps on {backend}, {expected.steps} on "
            f"numpy, output difference {cases[-1]['max_abs_output_difference']:.1e}"
        )
    finished = [case for case in cases if "steps_device" in case]
    summary: dict[str, Any] = {
        "backend": str(backend),
        "cases": cases,
        "all_steps_equal": all(c["steps_device"] == c["steps_numpy"] for c in finished),
        "max_abs_output_difference": max(
            (c["max_abs_output_difference"] for c in finished), default=None
        ),
    }
    if len(finished) < len(cases):
        summary["error"] = f"{len(cases) - len(finished)} case(s) skipped"
    return summary


def check_digits(report: Report) -> dict[str, Any]:
    import sheafsim as ss
    from sheafsim.config import load_config
    from sheafsim.experiment import prepare, resolve_dt

    overrides: dict[str, Any] = {"runtime.backend": "inprocess"}
    if report.data["quick"]:
        overrides["data.samples"] = 300
    config = load_config(ROOT / "examples" / "digits.toml", overrides)
    experiment = prepare(config)
    dt, lambda_max = resolve_dt(config, experiment)
    settings = config.diffusion
    options: dict[str, Any] = {
        "alpha": settings.alpha,
        "dt": dt,
        "tol": settings.tol,
        "min_steps": settings.min_steps,
        "max_steps": settings.max_steps,
        "init": settings.init,
        "seed": settings.seed,
        "output_mode": settings.output_mode,
        "integrator": settings.integrator,
        "record_crossings": False,
    }
    backend = device_backend(report)
    expected = ss.diffuse(experiment.net, experiment.x, **options)
    result = ss.diffuse(experiment.net, experiment.x, backend=backend, **options)
    reference = experiment.reference
    return {
        "backend": str(backend),
        "widths": experiment.net.widths,
        "samples": int(experiment.x.shape[1]),
        "integrator": settings.integrator,
        "dt": dt,
        "lambda_max_estimate": lambda_max,
        "tol": settings.tol,
        "test_accuracy": experiment.info.get("test_accuracy"),
        "status_numpy": expected.status,
        "status_device": result.status,
        "steps_numpy": expected.steps,
        "steps_device": result.steps,
        "wall_time_numpy_s": expected.wall_time_s,
        "wall_time_device_s": result.wall_time_s,
        "max_abs_error_vs_predict_proba_numpy": max_difference(
            expected.output, reference
        ),
        "max_abs_error_vs_predict_proba_device": max_difference(
            result.output, reference
        ),
        "max_abs_output_difference": max_difference(result.output, expected.output),
    }


def check_actors(report: Report) -> dict[str, Any]:
    import ray

    import sheafsim as ss
    from sheafsim.runtime import diffuse_on_actors

    steps = 100 if report.data["quick"] else 300
    net = ss.NeuralSheaf.random([8, 32, 32, 4], seed=0, output="softmax")
    x = np.random.default_rng(0).normal(size=(8, 64))
    # tol = 1e-300 is never met, so both runs take exactly `steps` steps.
    options: dict[str, Any] = {
        "dt": 0.05,
        "tol": 1e-300,
        "max_steps": steps,
        "integrator": "nesterov",
    }
    expected = ss.diffuse(net, x, **options)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(include_dashboard=False, logging_level="WARNING")
    try:
        start = time.perf_counter()
        result = diffuse_on_actors(
            net,
            x,
            backend="torch",
            device=report.data["device"],
            timeout_s=max(30.0, min(150.0, report.remaining_s())),
            **options,
        )
        elapsed = time.perf_counter() - start
        resources = ray.cluster_resources()
    finally:
        if owns_ray:
            ray.shutdown()
    return {
        "widths": net.widths,
        "samples": x.shape[1],
        "actor_backend": getattr(result, "backend", None),
        "n_actors": result.n_actors,
        "status": result.status,
        "steps": int(result.steps),
        "steps_in_process": expected.steps,
        "wall_time_s": result.wall_time_s,
        "call_time_s": round(elapsed, 3),
        "ray_gpus": resources.get("GPU", 0.0),
        "max_abs_output_difference_vs_numpy_in_process": max_difference(
            result.output, expected.output
        ),
    }


def bare_forward(xp: Any, net: Any, x: Any) -> Any:
    """Return the network output by the plain loop ``max(W a + b, 0)``."""
    a = x
    for w, b in zip(net.weights[:-1], net.biases[:-1], strict=True):
        z = w @ a + b
        a = xp.where(z >= 0, z, 0.0 * z)
    return net.weights[-1] @ a + net.biases[-1]


def time_heat_step(
    backend: Any, widths: list[int], columns: int, steps: int, repeats: int
) -> dict[str, Any]:
    """Time the forward pass and the Euler heat step of a random network."""
    import sheafsim as ss

    host = ss.NeuralSheaf.random(widths, seed=0)
    net = backend.network(host)
    x = backend.asarray(np.random.default_rng(0).normal(size=(widths[0], columns)))
    xp = backend.xp
    state = ss.initial_state(net, x, "random", seed=0)

    def forward() -> None:
        bare_forward(xp, net, x)

    for _ in range(3):
        forward()
    forward_times = []
    for _ in range(max(5, repeats)):
        backend.synchronize()
        start = time.perf_counter()
        forward()
        backend.synchronize()
        forward_times.append(time.perf_counter() - start)

    def heat(count: int) -> float:
        backend.synchronize()
        with warnings.catch_warnings():
            # tol = 1e-300 requests a fixed number of steps, also in float32.
            warnings.simplefilter("ignore", UserWarning)
            result = ss.diffuse(
                net,
                x,
                state=state,
                tol=1e-300,
                max_steps=count,
                check_step=False,
                record_crossings=False,
            )
        backend.synchronize()
        return result.wall_time_s / result.steps

    # Untimed steps load the kernels and fill torch's caching allocator.
    heat(3)
    heat_times = [heat(steps) for _ in range(repeats)]
    forward_s = statistics.median(forward_times)
    step_s = statistics.median(heat_times)
    return {
        "backend": str(backend),
        "widths": widths,
        "columns": columns,
        "forward_ms": round(forward_s * 1e3, 4),
        "heat_step_ms": round(step_s * 1e3, 4),
        "ratio": round(step_s / forward_s, 3),
        "steps_per_repeat": steps,
        "repeats": repeats,
        "heat_step_ms_per_repeat": [round(t * 1e3, 4) for t in heat_times],
    }


def check_heat_step_timing(report: Report) -> dict[str, Any]:
    import torch

    from sheafsim.backend import ArrayBackend

    cuda = report.data["device"] != "cpu"
    quick = report.data["quick"]
    if cuda:
        widths, columns = CUDA_TIMING
    else:
        widths, columns = CPU_QUICK_TIMING if quick else CPU_TIMING
    steps, repeats = (5, 3) if quick else (20, 5)
    rows = []
    errors = []
    for dtype in ("float32", "float64"):
        if report.remaining_s() <= 10:
            errors.append(f"{dtype}: skipped, the time budget is spent")
            continue
        try:
            row = time_heat_step(
                device_backend(report, dtype), widths, columns, steps, repeats
            )
        except Exception as error:  # noqa: BLE001 - the report records any failure
            errors.append(f"{dtype}: {type(error).__name__}: {error}")
            continue
        rows.append(row)
        say(f"  {row['backend']}: heat step / forward pass = {row['ratio']:.2f}")
        if cuda:
            torch.cuda.empty_cache()
    result: dict[str, Any] = {"device": rows}
    numpy_widths, numpy_columns = CPU_QUICK_TIMING if quick else NUMPY_TIMING
    if report.remaining_s() > 20:
        result["numpy_cpu"] = time_heat_step(
            ArrayBackend("numpy", "cpu", "float64"),
            numpy_widths,
            numpy_columns,
            steps,
            repeats,
        )
        result["numpy_cpu"]["cpu_count"] = os.cpu_count()
    else:
        errors.append("numpy_cpu: skipped, the time budget is spent")
    if errors:
        result["error"] = "; ".join(errors)
    return result


PARTS: dict[str, Callable[[Report], dict[str, Any]]] = {
    "environment": check_environment,
    "reference_cases": check_reference_cases,
    "digits": check_digits,
    "heat_step_timing": check_heat_step_timing,
    "actors": check_actors,
}
"""Parts in the order they run; the actor part runs last, as it starts Ray."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check sheafsim's CUDA path and write a JSON report."
    )
    parser.add_argument(
        "output",
        nargs="?",
        default="gpu_check.json",
        help="path of the JSON report (default: gpu_check.json)",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="use torch on the CPU instead of CUDA, with smaller networks",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples, steps and repeats"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds after which no further part starts (default: 270)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every part and write the report; return 0 when every part passed."""
    args = parse_arguments(argv)
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        print(
            f"gpu_check: cannot write {output}: give a file path in an existing "
            "folder, for example gpu_check.json",
            file=sys.stderr,
        )
        return 2
    mode = {"device": "cpu" if args.cpu else "cuda", "quick": bool(args.quick)}
    report = Report(output, args.budget_s, mode)
    say(f"device {mode['device']}, report {output}")
    limits: Any = contextlib.nullcontext()
    if args.cpu:
        import torch

        # Several threads contending with other processes on a small machine
        # make the CPU times erratic.
        torch.set_num_threads(1)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # installed with scikit-learn
            pass
        else:
            limits = threadpool_limits(limits=1, user_api="blas")
    with limits:
        for name, part in PARTS.items():
            report.run(name, part)
    report.write()
    say(f"done in {report.data['total_s']:.0f} s; ok = {report.data['ok']}")
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
