"""Experiment 4: a [64, 32, 10] softmax network on the scikit-learn digits.

Sheaf training and gradient descent start from the same He-initialised
weights. No recorded numbers exist for this configuration, so the section
reports the measurements only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.common import (
    Section,
    fmt,
    format_widths,
    markdown_table,
    plt,
    save_figure,
    write_csv,
)
from training.settings import DIGITS_WIDTHS, GD_LEARNING_RATE, Settings
from training.tasks import GradientTask, SheafTask, Task, dataset

NAME = "digits"
TITLE = "4. Digits: a [64, 32, 10] softmax network"
DATASET = "digits"


def _sheaf(settings: Settings) -> SheafTask:
    return SheafTask(
        dataset=DATASET,
        widths=DIGITS_WIDTHS,
        seed=settings.digits_seed,
        beta_n=1.0,
        epochs=settings.digits_epochs,
        steps_per_epoch=settings.digits_steps_per_epoch,
        log_every=0,
    )


def _gradient(settings: Settings) -> GradientTask:
    return GradientTask(
        dataset=DATASET,
        widths=DIGITS_WIDTHS,
        seed=settings.digits_seed,
        lr=GD_LEARNING_RATE["classification"],
        steps=settings.digits_gd_steps,
        record_every=settings.digits_steps_per_epoch,
    )


def tasks(settings: Settings) -> list[Task]:
    """Return the sheaf and the gradient-descent run."""
    return [_sheaf(settings), _gradient(settings)]


def _methods(settings: Settings) -> list[tuple[str, Task]]:
    return [("sheaf", _sheaf(settings)), ("gradient descent", _gradient(settings))]


def _figure(
    settings: Settings, results: dict[Task, dict[str, Any]], path: Path
) -> Path:
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for (label, task), colour in zip(
        _methods(settings), ("tab:blue", "tab:orange"), strict=True
    ):
        history = results[task]["history"]
        axis.plot(history["step"], history["test_accuracy"], color=colour, label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("test accuracy")
    axis.set_title(
        f"digits {format_widths(DIGITS_WIDTHS)}, seed {settings.digits_seed}"
    )
    axis.grid(True, alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def summarise(
    settings: Settings,
    results: dict[Task, dict[str, Any]],
    directory: Path,
    link_prefix: str,
) -> Section:
    """Write the CSV files and the figure, and return the report section."""
    rows, curve_rows, table_rows = [], [], []
    for label, task in _methods(settings):
        result = results[task]
        rows.append(
            {
                "method": label,
                "seed": task.seed,
                "status": result["status"],
                "steps": result["steps"],
                "train_loss": result["train_loss"],
                "test_loss": result["test_loss"],
                "train_accuracy": result["train_accuracy"],
                "test_accuracy": result["test_accuracy"],
                "wall_time_s": result["wall_time_s"],
            }
        )
        history = result["history"]
        for step, loss, accuracy in zip(
            history["step"],
            history["train_loss"],
            history["test_accuracy"],
            strict=True,
        ):
            curve_rows.append(
                {
                    "method": label,
                    "step": step,
                    "train_loss": loss,
                    "test_accuracy": accuracy,
                }
            )
        table_rows.append(
            [
                label,
                result["steps"],
                result["status"],
                fmt(result["train_loss"]),
                fmt(result["train_accuracy"], 4),
                fmt(result["test_accuracy"], 4),
                fmt(result["wall_time_s"], 3),
            ]
        )
    runs_csv = write_csv(directory / "digits.csv", rows)
    curves_csv = write_csv(directory / "digits_curves.csv", curve_rows)
    figure = _figure(settings, results, directory / "digits.png")
    data = dataset(DATASET)
    table = markdown_table(
        [
            "method",
            "steps",
            "status",
            "train CE",
            "train accuracy",
            "test accuracy",
            "train s",
        ],
        table_rows,
    )
    body = f"""`load_dataset("digits")`: {data.x_train.shape[1]} training and
{data.x_test.shape[1]} test images, pixels scaled to [0, 1]. Network
`{format_widths(DIGITS_WIDTHS)}` with softmax output, He initialisation with
seed {settings.digits_seed}. Sheaf training: {settings.digits_epochs} epochs of
{settings.digits_steps_per_epoch} steps, beta = 1/n_train, dt 0.005, stalks
reset to the forward pass every epoch. Gradient descent:
{settings.digits_gd_steps} full-batch steps with learning rate
{fmt(GD_LEARNING_RATE["classification"])}. Both methods take the same number
of steps. Bosca and Ghrist (arXiv:2603.14831) recorded no numbers for this
network, so this section has no comparison.

{table}

![test accuracy by step on digits]({link_prefix}{figure.name})

Files: `{runs_csv.name}`, `{curves_csv.name}` (one row per epoch),
`{figure.name}`."""
    task_list = tasks(settings)
    return Section(
        name=NAME,
        title=TITLE,
        body=body,
        comparisons=[],
        files=[runs_csv, curves_csv, figure],
        run_seconds=sum(results[t]["elapsed_s"] for t in task_list),
        n_runs=len(task_list),
    )
