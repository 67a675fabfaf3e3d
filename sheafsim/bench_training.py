"""Training benchmarks of ``sheafsim bench``: the joint step, the recipe, actors.

Every time is set against a baseline measured in the same process: the joint
training step against the plain numpy forward pass, and the actor training
round against the in-process training step.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from typing import Any

import numpy as np

from sheafsim.bench import BenchResult, _bare_forward, _median_time
from sheafsim.datasets import load_dataset
from sheafsim.neural import NeuralSheaf
from sheafsim.training import TrainingStep, _copy_net, _start_values, train

__all__ = ["bench_train_step", "bench_train_recipe", "bench_actor_train_round"]


def _step_time(widths: list[int], batch: int, steps: int, output: str) -> float:
    """Return the median seconds per joint step over three timed runs."""
    net = _copy_net(NeuralSheaf.random(widths, seed=0, output=output))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(widths[0], batch))
    if output == "softmax":
        y = np.eye(widths[-1])[:, rng.integers(0, widths[-1], size=batch)]
    else:
        y = rng.normal(size=(widths[-1], batch))
    step = TrainingStep(net, x, y, 1.0, 1.0 / batch, 0.001)
    values = _start_values(net, x, "forward_pass", 0)

    def run() -> None:
        nonlocal values
        values = step(values)

    return _median_time(run, 3, steps)


def _train_step_row(
    widths: list[int], batch: int, output: str, target: str, theirs: str, quick: bool
) -> list[Any]:
    """Return one row of the training-step table."""
    if quick:
        steps = 20
    elif batch == 300:
        steps = 2000
    else:
        steps = 100
    net = NeuralSheaf.random(widths, seed=0)
    x = np.random.default_rng(0).normal(size=(widths[0], batch))

    def forward(net: NeuralSheaf = net, x: np.ndarray = x) -> None:
        _bare_forward(net, x)

    number = max(1, int(0.2 / max(_median_time(forward, 1, 3), 1e-6)))
    base = _median_time(forward, 5, number)
    per_step = _step_time(widths, batch, steps, output)
    return [
        str(widths),
        batch,
        output,
        f"{base * 1e6:.1f}",
        f"{per_step * 1e6:.1f}",
        f"{per_step / base:.2f}x",
        target,
        theirs,
    ]


def bench_train_step(quick: bool = False) -> BenchResult:
    """Time per joint training step of stalks and weights, two networks."""
    cases: list[tuple[list[int], int, str, str, str]] = [
        ([2, 30, 1], 300, "identity", "<= 100 us", "about 550 us"),
        ([64, 128, 128, 10], 1797, "softmax", "<= 8 ms", "about 16 ms"),
    ]
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1, user_api="blas")

    rows = []
    # One BLAS thread for both the baseline and the step: several threads
    # contending with other processes on a small machine make both times erratic.
    with limits:
        for widths, batch, output, target, theirs in cases:
            rows.append(_train_step_row(widths, batch, output, target, theirs, quick))
    return BenchResult(
        "train_step",
        "Joint training step of stalks and weights (float64, numpy)",
        [
            "network",
            "samples",
            "output",
            "forward pass (us)",
            "training step (us)",
            "ratio to forward",
            "target",
            "authors' implementation",
        ],
        rows,
        [
            "One `TrainingStep` call: residuals, stalk forces and the local weight "
            "step of every affine edge, from the same old state. Both the forward "
            "pass and the step run with one BLAS thread (threadpoolctl). The "
            "authors' times were measured on a 2-core machine.",
        ],
    )


def bench_train_recipe(quick: bool = False) -> BenchResult:
    """Wall time of the paraboloid recipe, sheaf training and gradient descent."""
    from sheafsim.baseline import train_gradient_descent

    data = load_dataset("paraboloid")
    net = NeuralSheaf.random([2, 30, 1], seed=0)
    epochs = 2 if quick else 100
    sheaf = train(
        net,
        data.x_train,
        data.y_train,
        epochs=epochs,
        steps_per_epoch=1000,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    gd = train_gradient_descent(
        net,
        data.x_train,
        data.y_train,
        lr=0.005,
        epochs=epochs * 1000,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    rows: list[list[Any]] = []
    for method, result, steps in (
        ("sheaf dynamics", sheaf, sheaf.steps),
        ("gradient descent", gd, epochs * 1000),
    ):
        history = result.history
        rows.append(
            [
                method,
                steps,
                f"{result.wall_time_s:.2f}",
                f"{result.wall_time_s / steps * 1e6:.1f}",
                f"{history['train_loss'][-1]:.4f}",
                f"{history['test_loss'][-1]:.4f}",
            ]
        )
    return BenchResult(
        "train_recipe",
        "Paraboloid recipe: [2, 30, 1], 300 samples, beta * n = 1, dt 0.005",
        [
            "method",
            "steps",
            "wall time (s)",
            "per step (us)",
            "train MSE",
            "test MSE",
        ],
        rows,
        [
            "Sheaf training runs 100 epochs of 1000 joint steps; gradient descent "
            "takes the same number of full-batch steps with lr 0.005. Wall times "
            "leave out the loss evaluations. The paper's authors recorded train "
            "MSE 0.063 (test 0.087) for sheaf training and 0.0033 for gradient "
            "descent.",
        ],
    )


def bench_actor_train_round(quick: bool = False) -> BenchResult:
    """Synchronous actor training round against the in-process training step."""
    import ray

    from sheafsim.runtime import train_on_actors

    data = load_dataset("paraboloid")
    net = NeuralSheaf.random([2, 30, 1], seed=0)
    steps = 40 if quick else 300
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        rounds, local, gaps = [], [], []
        for _ in range(1 if quick else 3):
            actors = train_on_actors(
                net, data.x_train, data.y_train, epochs=1, steps_per_epoch=steps
            )
            inprocess = train(
                net,
                data.x_train,
                data.y_train,
                epochs=1,
                steps_per_epoch=steps,
                reset_each_epoch=False,
                init="random",
            )
            rounds.append(actors.wall_time_s / steps)
            local.append(inprocess.wall_time_s / steps)
            gaps.append(
                max(
                    float(np.max(np.abs(a - b)))
                    for a, b in zip(
                        actors.net.weights, inprocess.net.weights, strict=True
                    )
                )
            )
    finally:
        if owns_ray:
            ray.shutdown()
    round_s, local_s = statistics.median(rounds), statistics.median(local)
    return BenchResult(
        "actor_train_round",
        "Synchronous actor training round against the in-process training step",
        [
            "network",
            "samples",
            "steps",
            "in-process step (us)",
            "actor round (us)",
            "ratio",
            "max abs(actor W - in-process W)",
        ],
        [
            [
                "[2, 30, 1] identity",
                data.x_train.shape[1],
                steps,
                f"{local_s * 1e6:.1f}",
                f"{round_s * 1e6:.1f}",
                f"{round_s / local_s:.1f}x",
                f"{max(gaps):.1e}",
            ]
        ],
        [
            "Both train the paraboloid network from the same random stalks for the "
            "same steps; the actor round is the run's wall time per step, actor "
            "start-up excluded, on a local Ray with one actor per vertex (4 vertex "
            "actors and a coordinator). Medians of the repeats.",
        ],
    )
