"""Experiment 2: test loss of the paraboloid [2, 30, 1] against beta * n_train.

Every grid point trains the same network from the same seeds, changing only
the weight rate beta. A run that turns NaN or infinite counts as diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.common import (
    Comparison,
    Section,
    finite,
    fmt,
    markdown_table,
    mean_sd,
    plt,
    save_figure,
    write_csv,
)
from training.settings import (
    HIDDEN_WIDTH,
    POINT_TOLERANCE,
    RECORDED_BEST_RANGE,
    RECORDED_DIVERGENCE_ABOVE,
    RECORDED_OPTIMUM,
    RECORDED_STAGNATION_BELOW,
    REGIME_FACTOR,
    Settings,
)
from training.tasks import SheafTask, Task, synthetic_sheaf_task, synthetic_widths

NAME = "learning_rate_law"
TITLE = "2. Learning-rate law: test loss against beta * n_train"
DATASET = "paraboloid"


@dataclass(frozen=True)
class GridPoint:
    """Outcome of every seed at one value of ``beta * n_train``."""

    beta_n: float
    test_losses: list[float]
    train_losses: list[float]
    diverged: int
    runs: int
    regime: str = ""

    @property
    def mean_test_loss(self) -> float:
        """Mean test loss of the seeds that did not diverge, NaN when all did."""
        return float(np.mean(self.test_losses)) if self.test_losses else math.nan


def _widths() -> tuple[int, ...]:
    return synthetic_widths(DATASET, 1, HIDDEN_WIDTH)


def _runs(settings: Settings, beta_n: float) -> list[SheafTask]:
    return [
        synthetic_sheaf_task(settings, DATASET, _widths(), seed, beta_n)
        for seed in settings.seeds
    ]


def tasks(settings: Settings) -> list[Task]:
    """Return one sheaf run per grid point and seed."""
    return [task for b in settings.beta_n_grid for task in _runs(settings, b)]


def _grid(settings: Settings, results: dict[Task, dict[str, Any]]) -> list[GridPoint]:
    """Return the grid points with their regime labels.

    A point with a diverged seed is "diverged". The others are "best" when
    their mean test loss is within REGIME_FACTOR of the lowest mean, and
    otherwise "stagnation" below the optimum or "degraded" above it.
    """
    points = []
    for beta_n in settings.beta_n_grid:
        outcomes = [results[t] for t in _runs(settings, beta_n)]
        completed = [r for r in outcomes if r["status"] == "completed"]
        points.append(
            GridPoint(
                beta_n=beta_n,
                test_losses=finite(r["test_loss"] for r in completed),
                train_losses=finite(r["train_loss"] for r in completed),
                diverged=len(outcomes) - len(completed),
                runs=len(outcomes),
            )
        )
    stable = [p for p in points if p.diverged == 0 and p.test_losses]
    if not stable:
        return [_labelled(p, "diverged") for p in points]
    optimum = min(stable, key=lambda p: p.mean_test_loss)
    labelled = []
    for point in points:
        if point.diverged or not point.test_losses:
            regime = "diverged"
        elif point.mean_test_loss <= REGIME_FACTOR * optimum.mean_test_loss:
            regime = "optimum" if point is optimum else "best"
        elif point.beta_n < optimum.beta_n:
            regime = "stagnation"
        else:
            regime = "degraded"
        labelled.append(_labelled(point, regime))
    return labelled


def _labelled(point: GridPoint, regime: str) -> GridPoint:
    return GridPoint(
        point.beta_n,
        point.test_losses,
        point.train_losses,
        point.diverged,
        point.runs,
        regime,
    )


def _csv_rows(
    settings: Settings, results: dict[Task, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for beta_n in settings.beta_n_grid:
        for task in _runs(settings, beta_n):
            result = results[task]
            rows.append(
                {
                    "beta_n_train": beta_n,
                    "seed": task.seed,
                    "status": result["status"],
                    "steps": result["steps"],
                    "diverged_at_step": result["diverged_at_step"],
                    "train_loss": result["train_loss"],
                    "test_loss": result["test_loss"],
                    "wall_time_s": result["wall_time_s"],
                }
            )
    return rows


def _figure(settings: Settings, points: list[GridPoint], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.axvspan(
        min(settings.beta_n_grid) / 1.5,
        RECORDED_STAGNATION_BELOW,
        color="tab:gray",
        alpha=0.12,
        label="recorded: stagnation",
    )
    axis.axvspan(
        *RECORDED_BEST_RANGE, color="tab:green", alpha=0.10, label="recorded: best"
    )
    axis.axvspan(
        RECORDED_DIVERGENCE_ABOVE,
        max(settings.beta_n_grid) * 1.5,
        color="tab:red",
        alpha=0.10,
        label="recorded: degrades or diverges",
    )

    finite_all = [v for p in points for v in p.test_losses]
    top = max(finite_all) * 2 if finite_all else 10.0
    for point in points:
        axis.scatter(
            [point.beta_n] * len(point.test_losses),
            point.test_losses,
            color="tab:blue",
            s=12,
            alpha=0.6,
        )
        if point.diverged:
            axis.scatter(
                [point.beta_n],
                [top],
                marker="x",
                color="tab:red",
                s=60,
                label="diverged" if point is _first_diverged(points) else None,
            )
            axis.annotate(
                f"{point.diverged}/{point.runs}",
                (point.beta_n, top),
                textcoords="offset points",
                xytext=(5, -12),
                fontsize=8,
                color="tab:red",
            )

    shown = [p for p in points if p.test_losses]
    axis.plot(
        [p.beta_n for p in shown],
        [p.mean_test_loss for p in shown],
        color="tab:blue",
        marker="o",
        label="mean over seeds",
    )
    axis.fill_between(
        [p.beta_n for p in shown],
        [min(p.test_losses) for p in shown],
        [max(p.test_losses) for p in shown],
        color="tab:blue",
        alpha=0.2,
        label="min to max over seeds",
    )

    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlim(min(settings.beta_n_grid) / 1.5, max(settings.beta_n_grid) * 1.5)
    axis.set_xlabel("beta * n_train")
    axis.set_ylabel("test MSE after training")
    axis.set_title(
        f"paraboloid [2, 30, 1], {settings.total_steps} steps, "
        f"{len(settings.seeds)} seed(s)"
    )
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(figure, path)


def _first_diverged(points: list[GridPoint]) -> GridPoint | None:
    return next((p for p in points if p.diverged), None)


def _boundary_verdict(recorded: float, below: float | None, above: float | None) -> str:
    """Compare a recorded regime boundary with the grid points on either side."""
    if below is None or above is None:
        return "differs (the boundary is not on the grid)"
    if below / POINT_TOLERANCE <= recorded <= above * POINT_TOLERANCE:
        return "agrees"
    return "differs"


def _optimum_text(points: list[GridPoint], optimum: GridPoint) -> str:
    """Describe the optimum and the runner-up, which is often nearly as good."""
    text = f"{fmt(optimum.beta_n)} (test MSE {fmt(optimum.mean_test_loss)})"
    others = [p for p in points if p.regime == "best" and p.test_losses]
    if others:
        runner_up = min(others, key=lambda p: p.mean_test_loss)
        text += (
            f", next best {fmt(runner_up.beta_n)} (test MSE "
            f"{fmt(runner_up.mean_test_loss)})"
        )
    return text


def _upper_comparison(
    points: list[GridPoint],
    optimum: GridPoint | None,
    last_good: float | None,
    first_failing: float | None,
) -> Comparison:
    """Compare the recorded upper boundary, where training degrades or diverges."""
    claim = "training degrades or diverges above beta * n_train of about"
    recorded = fmt(RECORDED_DIVERGENCE_ABOVE)
    top = points[-1]
    if first_failing is not None or optimum is None or not top.test_losses:
        first_diverged = min(
            (p.beta_n for p in points if p.regime == "diverged"), default=None
        )
        measured = (
            f"best regime up to {fmt(last_good)}, degraded or diverged from "
            f"{fmt(first_failing)}, first divergence at {fmt(first_diverged)}"
        )
        verdict = _boundary_verdict(RECORDED_DIVERGENCE_ABOVE, last_good, first_failing)
        return Comparison(claim, recorded, measured, verdict)
    if top is optimum:
        measured = f"no run diverged up to {fmt(top.beta_n)}, the largest rate is best"
        return Comparison(claim, recorded, measured, "differs")
    growth = top.mean_test_loss / optimum.mean_test_loss
    measured = (
        f"no run diverged up to {fmt(top.beta_n)}; the test MSE there is "
        f"{fmt(growth, 3)}x the lowest"
    )
    verdict = (
        "differs (the loss rises above the optimum but stays within "
        f"{fmt(REGIME_FACTOR)}x of it, and no run diverges)"
    )
    return Comparison(claim, recorded, measured, verdict)


def _comparisons(points: list[GridPoint]) -> list[Comparison]:
    def grid(*regimes: str) -> list[float]:
        return [p.beta_n for p in points if p.regime in regimes]

    good = grid("best", "optimum")
    first_good = min(good, default=None)
    last_good = max(good, default=None)
    last_stagnating = max(grid("stagnation"), default=None)
    above_good = [b for b in grid("degraded", "diverged") if b > (last_good or 0.0)]
    first_failing = min(above_good, default=None)
    lower = _boundary_verdict(RECORDED_STAGNATION_BELOW, last_stagnating, first_good)
    upper = _boundary_verdict(RECORDED_DIVERGENCE_ABOVE, last_good, first_failing)

    optimum = next((p for p in points if p.regime == "optimum"), None)
    low, high = RECORDED_OPTIMUM
    optimum_agrees = (
        optimum is not None
        and low / POINT_TOLERANCE <= optimum.beta_n <= high * POINT_TOLERANCE
    )
    return [
        Comparison(
            "training stagnates below beta * n_train of about",
            fmt(RECORDED_STAGNATION_BELOW),
            f"stagnation up to {fmt(last_stagnating)}, best regime from "
            f"{fmt(first_good)}",
            lower,
        ),
        Comparison(
            "lowest test loss at beta * n_train of",
            f"{fmt(low)} to {fmt(high)}",
            "-" if optimum is None else _optimum_text(points, optimum),
            "agrees" if optimum_agrees else "differs",
        ),
        Comparison(
            f"best regime (test loss within {fmt(REGIME_FACTOR)}x of the lowest)",
            f"{fmt(RECORDED_BEST_RANGE[0])} to {fmt(RECORDED_BEST_RANGE[1])}",
            f"{fmt(first_good)} to {fmt(last_good)}",
            "agrees" if lower == upper == "agrees" else "differs",
        ),
        _upper_comparison(points, optimum, last_good, first_failing),
    ]


def summarise(
    settings: Settings,
    results: dict[Task, dict[str, Any]],
    directory: Path,
    link_prefix: str,
) -> Section:
    """Write the CSV file and the figure, and return the report section."""
    points = _grid(settings, results)
    runs_csv = write_csv(
        directory / "learning_rate_law.csv", _csv_rows(settings, results)
    )
    figure = _figure(settings, points, directory / "learning_rate_law.png")
    rows = []
    for point in points:
        outcomes = [results[t] for t in _runs(settings, point.beta_n)]
        diverged_steps = [
            str(r["diverged_at_step"]) for r in outcomes if r["diverged_at_step"]
        ]
        rows.append(
            [
                fmt(point.beta_n),
                mean_sd(point.train_losses),
                mean_sd(point.test_losses),
                f"{point.diverged} of {point.runs}"
                + (f" (at step {', '.join(diverged_steps)})" if diverged_steps else ""),
                point.regime,
            ]
        )
    table = markdown_table(
        ["beta * n_train", "train MSE", "test MSE", "diverged", "regime"], rows
    )
    grid = ", ".join(fmt(b) for b in settings.beta_n_grid)
    body = f"""The paraboloid `[2, 30, 1]` is trained with beta = b / n_train for
b in {{{grid}}}, seeds {", ".join(str(s) for s in settings.seeds)}, dt 0.005 and
{settings.total_steps} steps; everything else as in experiment 1. Losses are
means ± standard deviations over the seeds that did not diverge. A run
diverges when a stalk, weight or loss becomes NaN or infinite; it then counts
in the "diverged" column and not in the means. Regimes are read off the
measured curve: "optimum" is the lowest mean test loss, "best" is within
{fmt(REGIME_FACTOR)}x of it, "stagnation" and "degraded" are worse points below
and above the optimum, and "diverged" has at least one diverged seed.

{table}

![test loss against beta * n_train]({link_prefix}{figure.name})

The shaded bands are the regimes that the paper's authors recorded. Files:
`{runs_csv.name}` (one row per run), `{figure.name}`."""
    task_list = tasks(settings)
    return Section(
        name=NAME,
        title=TITLE,
        body=body,
        comparisons=_comparisons(points),
        files=[runs_csv, figure],
        run_seconds=sum(results[t]["elapsed_s"] for t in task_list),
        n_runs=len(task_list),
    )
