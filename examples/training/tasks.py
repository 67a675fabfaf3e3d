"""Independent training and spectrum runs, and a process pool that runs them.

Every run is a frozen dataclass, so experiments that need the same run (the
paraboloid [2, 30, 1] at beta * n_train = 1 appears in three of them) share
one result. A run returns a plain dict that pickles cheaply.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheafsim import NeuralSheaf, extreme_eigenvalues, load_dataset
from sheafsim.baseline import train_gradient_descent
from sheafsim.datasets import Dataset
from sheafsim.training import default_dt, train
from training.settings import GD_LEARNING_RATE, REGRESSION_DATASETS, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SheafTask:
    """Sheaf training of ``NeuralSheaf.random(widths, seed)`` on ``dataset``.

    ``beta_n`` is ``beta * n_train``, so 1 is the default ``beta = 1 / n_train``.
    The step ``dt`` is :func:`sheafsim.training.default_dt`. When
    ``final_spectrum_inputs`` is positive, the run also reports the median
    ``lambda_min`` and ``lambda_max`` of the free Laplacian of the trained
    network over that many leading training inputs.
    """

    dataset: str
    widths: tuple[int, ...]
    seed: int
    beta_n: float
    epochs: int
    steps_per_epoch: int
    log_every: int
    final_spectrum_inputs: int = 0

    def describe(self) -> str:
        """Return a one-line label for progress messages."""
        return (
            f"sheaf {self.dataset} {list(self.widths)} seed {self.seed} "
            f"beta*n {self.beta_n:g}"
        )


@dataclass(frozen=True)
class GradientTask:
    """Full-batch gradient descent from the same initial network as :class:`SheafTask`.

    The history keeps every ``record_every``-th step, the last step and about
    four log-spaced steps per decade.
    """

    dataset: str
    widths: tuple[int, ...]
    seed: int
    lr: float
    steps: int
    record_every: int

    def describe(self) -> str:
        """Return a one-line label for progress messages."""
        return f"GD {self.dataset} {list(self.widths)} seed {self.seed} lr {self.lr:g}"


@dataclass(frozen=True)
class SpectrumTask:
    """Extreme eigenvalues of the free Laplacian of the initial network.

    The eigenvalues are taken at the forward-pass pattern of each of the first
    ``n_inputs`` training inputs.
    """

    dataset: str
    widths: tuple[int, ...]
    seed: int
    n_inputs: int

    def describe(self) -> str:
        """Return a one-line label for progress messages."""
        return f"spectrum {self.dataset} {list(self.widths)} seed {self.seed}"


Task = SheafTask | GradientTask | SpectrumTask


@functools.cache
def dataset(name: str) -> Dataset:
    """Return the data set ``name`` with the loader's default split and seed 42."""
    return load_dataset(name)


def initial_network(name: str, widths: tuple[int, ...], seed: int) -> NeuralSheaf:
    """Return the He-initialised network whose output fits the task of ``name``."""
    return NeuralSheaf.random(list(widths), seed=seed, output=dataset(name).output)


def _median_spectrum(net: NeuralSheaf, x: np.ndarray) -> dict[str, Any]:
    lambda_min, lambda_max = extreme_eigenvalues(net, x)
    return {
        "lambda_min": lambda_min.tolist(),
        "lambda_max": lambda_max.tolist(),
        "median_lambda_min": float(np.median(lambda_min)),
        "median_lambda_max": float(np.median(lambda_max)),
    }


def run_sheaf(task: SheafTask) -> dict[str, Any]:
    """Train by sheaf dynamics and return the status, final scores and history."""
    data = dataset(task.dataset)
    net = initial_network(task.dataset, task.widths, task.seed)
    n_train = data.x_train.shape[1]
    dt = default_dt(net)

    start = time.perf_counter()
    result = train(
        net,
        data.x_train,
        data.y_train,
        beta=task.beta_n / n_train,
        epochs=task.epochs,
        steps_per_epoch=task.steps_per_epoch,
        seed=task.seed,
        x_test=data.x_test,
        y_test=data.y_test,
        log_every=task.log_every,
    )
    history = {key: list(values) for key, values in result.history.items()}
    history["time"] = [dt * step for step in history["step"]]
    output: dict[str, Any] = {
        "status": result.status,
        "steps": result.steps,
        "diverged_at_step": None if result.completed else result.steps,
        "dt": dt,
        "wall_time_s": result.wall_time_s,
        "history": history,
    }
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        output[key] = history[key][-1] if result.completed else math.nan

    if task.final_spectrum_inputs and result.completed:
        x = data.x_train[:, : task.final_spectrum_inputs]
        spectrum = _median_spectrum(result.net, x)
        output["final_median_lambda_min"] = spectrum["median_lambda_min"]
        output["final_median_lambda_max"] = spectrum["median_lambda_max"]
    output["elapsed_s"] = time.perf_counter() - start
    return output


def run_gradient_descent(task: GradientTask) -> dict[str, Any]:
    """Train by gradient descent and return the status, final scores and history."""
    data = dataset(task.dataset)
    net = initial_network(task.dataset, task.widths, task.seed)

    start = time.perf_counter()
    result = train_gradient_descent(
        net,
        data.x_train,
        data.y_train,
        lr=task.lr,
        epochs=task.steps,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    elapsed = time.perf_counter() - start

    last = len(result.history["step"]) - 1
    # Row i of the history is step i. Log-spaced early rows keep the start of
    # the curve visible on a log axis.
    early = {round(10 ** (k / 4)) for k in range(4 * 6)}
    kept = [
        i
        for i in range(last + 1)
        if i % task.record_every == 0 or i == last or i in early
    ]
    history = {key: [values[i] for i in kept] for key, values in result.history.items()}
    output: dict[str, Any] = {
        "status": result.status,
        "steps": result.epochs,
        "diverged_at_step": None if result.completed else result.epochs + 1,
        "wall_time_s": result.wall_time_s,
        "elapsed_s": elapsed,
        "history": history,
    }
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        output[key] = history[key][-1] if result.completed else math.nan
    return output


def run_spectrum(task: SpectrumTask) -> dict[str, Any]:
    """Return the extreme eigenvalues per input and their medians."""
    data = dataset(task.dataset)
    net = initial_network(task.dataset, task.widths, task.seed)
    start = time.perf_counter()
    output = _median_spectrum(net, data.x_train[:, : task.n_inputs])
    output["elapsed_s"] = time.perf_counter() - start
    return output


def run_task(task: Task) -> dict[str, Any]:
    """Run one task of any kind."""
    if isinstance(task, SheafTask):
        return run_sheaf(task)
    if isinstance(task, GradientTask):
        return run_gradient_descent(task)
    return run_spectrum(task)


def _estimated_cost(task: Task) -> float:
    """Return a rough cost used only to start the longest tasks first."""
    widths = task.widths
    weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    n_train = dataset(task.dataset).x_train.shape[1]
    if isinstance(task, SheafTask):
        return 2.0 * task.epochs * task.steps_per_epoch * weights * n_train
    if isinstance(task, GradientTask):
        return 2.0 * task.steps * weights * n_train
    return float(task.n_inputs * sum(widths[1:]) ** 3)


def run_all(tasks: Iterable[Task], workers: int) -> dict[Task, dict[str, Any]]:
    """Run every distinct task on ``workers`` processes and return the results.

    With ``workers == 1`` the tasks run in this process. Longer tasks start
    first, so the pool ends with short tasks on both workers.
    """
    unique = sorted(dict.fromkeys(tasks), key=_estimated_cost, reverse=True)
    results: dict[Task, dict[str, Any]] = {}
    total = len(unique)

    def note(task: Task, result: dict[str, Any]) -> None:
        results[task] = result
        logger.info(
            "[%d/%d] %s done in %.1f s (%s)",
            len(results),
            total,
            task.describe(),
            result["elapsed_s"],
            result.get("status", "completed"),
        )

    if workers == 1:
        for task in unique:
            note(task, run_task(task))
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_task, task): task for task in unique}
        for future in as_completed(futures):
            note(futures[future], future.result())
    return results


def output_width(name: str) -> int:
    """Return the number of output units that the targets of ``name`` need."""
    return int(dataset(name).y_train.shape[0])


def synthetic_widths(name: str, hidden_layers: int, width: int) -> tuple[int, ...]:
    """Return ``(2, width, ..., width, n_out)`` for a two-feature data set."""
    return (2, *([width] * hidden_layers), output_width(name))


def synthetic_sheaf_task(
    settings: Settings,
    name: str,
    widths: tuple[int, ...],
    seed: int,
    beta_n: float = 1.0,
    epochs: int | None = None,
) -> SheafTask:
    """Return the sheaf run that the configuration, rate and depth experiments share.

    ``epochs`` defaults to ``settings.epochs``.
    """
    return SheafTask(
        dataset=name,
        widths=widths,
        seed=seed,
        beta_n=beta_n,
        epochs=settings.epochs if epochs is None else epochs,
        steps_per_epoch=settings.steps_per_epoch,
        log_every=settings.log_every,
        final_spectrum_inputs=settings.final_spectrum_inputs,
    )


def synthetic_gradient_task(
    settings: Settings, name: str, widths: tuple[int, ...], seed: int
) -> GradientTask:
    """Return the gradient-descent baseline run of a synthetic configuration."""
    task = "regression" if name in REGRESSION_DATASETS else "classification"
    return GradientTask(
        dataset=name,
        widths=widths,
        seed=seed,
        lr=GD_LEARNING_RATE[task],
        steps=settings.gd_steps,
        record_every=settings.gd_record_every,
    )
