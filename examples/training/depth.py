"""Experiment 3: training loss against integration time T = dt * steps by depth.

Networks with 1, 2 and 3 hidden layers of width 30 are trained on the
paraboloid with their default dt (0.005 for one hidden layer, 0.01 for more).
The weight update per unit T is ``beta * T`` whatever dt is, so T is the
common clock. The smallest eigenvalue of the free Laplacian at the
initial weights measures the spectral gap of each depth.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from sheafsim import NeuralSheaf
from sheafsim.training import default_dt
from training.common import (
    Comparison,
    Section,
    finite,
    fmt,
    format_widths,
    markdown_table,
    mean_sd,
    plt,
    point_verdict,
    save_figure,
    value_at_step,
    write_csv,
)
from training.settings import (
    HIDDEN_WIDTH,
    RECORDED_LAMBDA_MAX_INIT,
    RECORDED_LAMBDA_MAX_TRAINED,
    RECORDED_LAMBDA_MIN_INIT,
    RECORDED_LAMBDA_MIN_TRAINED,
    Settings,
)
from training.tasks import (
    SheafTask,
    SpectrumTask,
    Task,
    synthetic_sheaf_task,
    synthetic_widths,
)

NAME = "depth"
TITLE = "3. Depth against integration time T = dt * steps"
DATASET = "paraboloid"
LOSS_THRESHOLD = 0.2
"""Train MSE whose first crossing time T the depth table reports."""
ORDER_SHARE_FOR_AGREEMENT = 0.75
"""Share of common T values at which the loss must grow with depth to agree.

The depth claim agrees when the loss grows with depth at this share of the
common T values and the first T below LOSS_THRESHOLD grows with depth too. It
partly agrees when only one of the two holds."""


def _widths(hidden_layers: int) -> tuple[int, ...]:
    return synthetic_widths(DATASET, hidden_layers, HIDDEN_WIDTH)


def _epochs(settings: Settings, widths: tuple[int, ...]) -> int:
    """Return the epochs that reach ``settings.depth_max_time`` with the default dt."""
    dt = default_dt(NeuralSheaf.random(list(widths)))
    return max(1, round(settings.depth_max_time / (dt * settings.steps_per_epoch)))


def _training(settings: Settings, hidden_layers: int) -> list[SheafTask]:
    widths = _widths(hidden_layers)
    epochs = _epochs(settings, widths)
    return [
        synthetic_sheaf_task(settings, DATASET, widths, seed, epochs=epochs)
        for seed in settings.seeds
    ]


def _spectra(settings: Settings, hidden_layers: int) -> list[SpectrumTask]:
    widths = _widths(hidden_layers)
    return [
        SpectrumTask(DATASET, widths, seed, settings.spectrum_inputs)
        for seed in settings.seeds
    ]


def tasks(settings: Settings) -> list[Task]:
    """Return the training and initial-spectrum runs of every depth and seed."""
    runs: list[Task] = []
    for hidden_layers in settings.depths:
        runs.extend(_training(settings, hidden_layers))
        runs.extend(_spectra(settings, hidden_layers))
    return runs


def _loss_at_time(result: dict[str, Any], time: float) -> float | None:
    """Return the train loss at integration time ``time``, None past the run."""
    step = round(time / result["dt"])
    if step > result["steps"] or result["status"] != "completed":
        return None
    found = value_at_step(result["history"], step)
    return None if found is None or found[0] != step else found[1]


def _first_time_below(result: dict[str, Any], threshold: float) -> float | None:
    history = result["history"]
    for time, loss in zip(history["time"], history["train_loss"], strict=True):
        if loss is not None and loss < threshold:
            return time
    return None


def _mean_curve(
    results: dict[Task, dict[str, Any]], runs: list[SheafTask]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return T, mean, min and max train loss over the seeds, T > 0 only."""
    histories = [results[t]["history"] for t in runs]
    length = min(len(h["time"]) for h in histories)
    time = np.array(histories[0]["time"][:length], dtype=float)
    losses = np.array(
        [
            [np.nan if v is None else v for v in h["train_loss"][:length]]
            for h in histories
        ]
    )
    keep = time > 0
    return (
        time[keep],
        np.nanmean(losses, axis=0)[keep],
        np.nanmin(losses, axis=0)[keep],
        np.nanmax(losses, axis=0)[keep],
    )


def _csv_rows(
    settings: Settings, results: dict[Task, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for hidden_layers in settings.depths:
        for task in _training(settings, hidden_layers):
            result = results[task]
            history = result["history"]
            for step, time, train_loss, test_loss in zip(
                history["step"],
                history["time"],
                history["train_loss"],
                history["test_loss"],
                strict=True,
            ):
                # Every logged step of the first epoch, then epoch ends only.
                if step > task.steps_per_epoch and step % task.steps_per_epoch:
                    continue
                rows.append(
                    {
                        "hidden_layers": hidden_layers,
                        "widths": format_widths(task.widths),
                        "dt": result["dt"],
                        "seed": task.seed,
                        "step": step,
                        "time": time,
                        "train_loss": train_loss,
                        "test_loss": test_loss,
                    }
                )
    return rows


def _spectrum_rows(
    settings: Settings, results: dict[Task, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for hidden_layers in settings.depths:
        pairs = zip(
            _training(settings, hidden_layers),
            _spectra(settings, hidden_layers),
            strict=True,
        )
        for training, spectrum in pairs:
            initial, trained = results[spectrum], results[training]
            rows.append(
                {
                    "hidden_layers": hidden_layers,
                    "widths": format_widths(training.widths),
                    "seed": training.seed,
                    "initial_inputs": spectrum.n_inputs,
                    "initial_median_lambda_min": initial["median_lambda_min"],
                    "initial_median_lambda_max": initial["median_lambda_max"],
                    "trained_inputs": training.final_spectrum_inputs,
                    "trained_median_lambda_min": trained.get("final_median_lambda_min"),
                    "trained_median_lambda_max": trained.get("final_median_lambda_max"),
                }
            )
    return rows


def _figure(
    settings: Settings, results: dict[Task, dict[str, Any]], path: Path
) -> Path:
    figure, (curves, spectra) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]}
    )
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    boxes, labels = [], []
    for index, hidden_layers in enumerate(settings.depths):
        colour = colours[index % len(colours)]
        runs = _training(settings, hidden_layers)
        time, mean, low, high = _mean_curve(results, runs)
        dt = results[runs[0]]["dt"]
        curves.plot(
            time,
            mean,
            color=colour,
            label=f"{hidden_layers} hidden, dt {fmt(dt)}",
        )
        curves.fill_between(time, low, high, color=colour, alpha=0.2)
        values = [
            v
            for t in _spectra(settings, hidden_layers)
            for v in results[t]["lambda_min"]
        ]
        boxes.append(values)
        labels.append(str(hidden_layers))

    curves.set_xscale("log")
    curves.set_yscale("log")
    curves.set_xlabel("T = dt * steps")
    curves.set_ylabel("train MSE")
    curves.set_title("paraboloid, width 30: mean and min to max over seeds")
    curves.grid(True, which="major", alpha=0.3)
    curves.legend(fontsize=8)

    spectra.boxplot(boxes, tick_labels=labels)
    spectra.set_yscale("log")
    spectra.set_xlabel("hidden layers")
    spectra.set_ylabel("lambda_min of the free Laplacian")
    spectra.set_title("at the initial weights, per input")
    spectra.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


def _times(settings: Settings, results: dict[Task, dict[str, Any]]) -> list[float]:
    """Return the report's T values that at least one depth reaches."""
    reached = max(
        results[t]["dt"] * results[t]["steps"]
        for d in settings.depths
        for t in _training(settings, d)
    )
    return [time for time in settings.depth_times if time <= reached + 1e-9]


def _mean_crossing(
    results: dict[Task, dict[str, Any]], runs: list[SheafTask]
) -> float | None:
    """Return the mean first T below LOSS_THRESHOLD, None if a seed never gets there."""
    crossings = [_first_time_below(results[t], LOSS_THRESHOLD) for t in runs]
    if any(c is None for c in crossings):
        return None
    return float(np.mean(crossings))


def _mean_loss(
    results: dict[Task, dict[str, Any]], runs: list[SheafTask], time: float
) -> float | None:
    values = [_loss_at_time(results[t], time) for t in runs]
    numbers = finite(values)
    if not numbers or len(numbers) < len(values):
        return None
    return float(np.mean(numbers))


def _comparisons(
    settings: Settings, results: dict[Task, dict[str, Any]]
) -> list[Comparison]:
    common = []
    for time in _times(settings, results):
        losses = [
            _mean_loss(results, _training(settings, d), time) for d in settings.depths
        ]
        if all(v is not None for v in losses):
            common.append((time, losses))

    ordered = [
        t for t, losses in common if all(a < b for a, b in itertools.pairwise(losses))
    ]
    share = len(ordered) / len(common) if common else 0.0
    ordered_text = ", ".join(fmt(t) for t in ordered) or "none"
    other_text = ", ".join(fmt(t) for t, _ in common if t not in ordered) or "none"

    crossings = [
        _mean_crossing(results, _training(settings, d)) for d in settings.depths
    ]
    later = all(v is not None for v in crossings) and all(
        a < b for a, b in itertools.pairwise(crossings)
    )
    if later and share >= ORDER_SHARE_FOR_AGREEMENT:
        verdict = "agrees"
    elif later or share >= ORDER_SHARE_FOR_AGREEMENT:
        verdict = "partly agrees"
    else:
        verdict = "differs"
    crossing_text = ", ".join(
        f"{d} hidden: {fmt(c)}" for d, c in zip(settings.depths, crossings, strict=True)
    )
    comparisons = [
        Comparison(
            "deeper nets train slower per unit T",
            "slower with depth",
            f"mean first T with train MSE < {fmt(LOSS_THRESHOLD)}: {crossing_text}. "
            f"Train MSE grows with depth at {len(ordered)} of {len(common)} "
            f"common T values (T = {ordered_text}), not at T = {other_text}",
            verdict,
        )
    ]

    medians = [
        float(np.mean([results[t]["median_lambda_min"] for t in _spectra(settings, d)]))
        for d in settings.depths
    ]
    shrinking = all(a > b for a, b in itertools.pairwise(medians))
    comparisons.append(
        Comparison(
            "the spectral gap (median lambda_min at initialisation) shrinks with depth",
            "smaller with depth",
            ", ".join(
                f"{d} hidden: {fmt(m)}"
                for d, m in zip(settings.depths, medians, strict=True)
            ),
            "agrees" if shrinking else "differs",
        )
    )

    if 1 not in settings.depths:
        return comparisons
    spectra = [results[t] for t in _spectra(settings, 1)]
    trained = [results[t] for t in _training(settings, 1)]
    for label, recorded, values in (
        (
            "[2, 30, 1] median lambda_min at initialisation",
            RECORDED_LAMBDA_MIN_INIT,
            [r["median_lambda_min"] for r in spectra],
        ),
        (
            "[2, 30, 1] median lambda_max at initialisation",
            RECORDED_LAMBDA_MAX_INIT,
            [r["median_lambda_max"] for r in spectra],
        ),
        (
            "[2, 30, 1] median lambda_min after training",
            RECORDED_LAMBDA_MIN_TRAINED,
            [r.get("final_median_lambda_min") for r in trained],
        ),
        (
            "[2, 30, 1] median lambda_max after training",
            RECORDED_LAMBDA_MAX_TRAINED,
            [r.get("final_median_lambda_max") for r in trained],
        ),
    ):
        numbers = finite(values)
        mean = float(np.mean(numbers)) if numbers else float("nan")
        comparisons.append(
            Comparison(
                label, fmt(recorded), mean_sd(values), point_verdict(recorded, mean)
            )
        )
    return comparisons


def summarise(
    settings: Settings,
    results: dict[Task, dict[str, Any]],
    directory: Path,
    link_prefix: str,
) -> Section:
    """Write the CSV files and the figure, and return the report section."""
    curves_csv = write_csv(directory / "depth.csv", _csv_rows(settings, results))
    spectrum_csv = write_csv(
        directory / "depth_spectrum.csv", _spectrum_rows(settings, results)
    )
    figure = _figure(settings, results, directory / "depth.png")

    times = _times(settings, results)
    loss_rows = []
    for time in times:
        row = [fmt(time)]
        for hidden_layers in settings.depths:
            runs = _training(settings, hidden_layers)
            row.append(mean_sd([_loss_at_time(results[t], time) for t in runs]))
        loss_rows.append(row)
    loss_table = markdown_table(
        ["T", *[f"{d} hidden: train MSE" for d in settings.depths]], loss_rows
    )

    depth_rows = []
    for hidden_layers in settings.depths:
        runs = _training(settings, hidden_layers)
        spectra = [results[t] for t in _spectra(settings, hidden_layers)]
        first = results[runs[0]]
        crossings = [_first_time_below(results[t], LOSS_THRESHOLD) for t in runs]
        reached = finite(crossings)
        depth_rows.append(
            [
                hidden_layers,
                format_widths(_widths(hidden_layers)),
                fmt(first["dt"]),
                first["steps"],
                fmt(first["dt"] * first["steps"]),
                mean_sd([r["median_lambda_min"] for r in spectra]),
                mean_sd([r["median_lambda_max"] for r in spectra]),
                mean_sd([results[t].get("final_median_lambda_min") for t in runs]),
                mean_sd([results[t].get("final_median_lambda_max") for t in runs]),
                f"{mean_sd(reached)} ({len(reached)} of {len(runs)} seeds)",
                fmt(np.mean([results[t]["wall_time_s"] for t in runs]), 3),
            ]
        )
    depth_table = markdown_table(
        [
            "hidden",
            "widths",
            "dt",
            "steps",
            "T reached",
            "lambda_min init",
            "lambda_max init",
            "lambda_min trained",
            "lambda_max trained",
            f"first T with train MSE < {fmt(LOSS_THRESHOLD)}",
            "train s",
        ],
        depth_rows,
    )
    networks = ", ".join(f"`{format_widths(_widths(d))}`" for d in settings.depths)
    body = f"""The networks {networks} train on the paraboloid with beta =
1/n_train and their default dt (0.005 for one hidden layer, 0.01 for more) up
to T = {fmt(settings.depth_max_time)}, so the deeper networks take half as
many steps. The train MSE is logged every {settings.log_every} steps and
shown at fixed T as mean ± standard deviation over seeds
{", ".join(str(s) for s in settings.seeds)}; "-" means the run does not reach
that T.

{loss_table}

The eigenvalues are medians over inputs of the free Laplacian at the
forward-pass pattern, then mean ± standard deviation over seeds: at the initial
weights over the first {settings.spectrum_inputs} training inputs, and after
training over the first {settings.final_spectrum_inputs}.

{depth_table}

![train loss against T by depth]({link_prefix}{figure.name})

Files: `{curves_csv.name}` (every {settings.log_every} steps in the first
epoch, then at every epoch end),
`{spectrum_csv.name}`, `{figure.name}`."""
    task_list = tasks(settings)
    return Section(
        name=NAME,
        title=TITLE,
        body=body,
        comparisons=_comparisons(settings, results),
        files=[curves_csv, spectrum_csv, figure],
        run_seconds=sum(results[t]["elapsed_s"] for t in task_list),
        n_runs=len(task_list),
    )
