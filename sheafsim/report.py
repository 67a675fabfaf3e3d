"""Draw the figures of a run directory and write them into an HTML report.

:func:`write_report` reads a run with :func:`sheafsim.run.load_run` in
non-strict mode, so unreadable files are listed in the report instead of
stopping it. Each figure is drawn only when the tables it needs are readable:

* ``energy.png``: sheaf energy against step, with the ReLU boundary crossings
  of ``crossings.parquet`` below it;
* ``discord_by_type.png``, ``discord_by_layer.png`` and
  ``discord_heatmap.png``: the edge discord of ``edges.parquet``;
* ``steps_per_vertex.png`` and ``staleness.png``: the vertex actors of an
  actor run, from ``vertices.parquet`` and ``staleness.parquet``;
* ``loss.png`` and ``lambda_min.png``: a training run, from
  ``training.parquet``, ``baseline.parquet`` and ``spectra.parquet``;
* ``pinned_discord.png``: the discord of the trained network
  (``weights.npz``) with its training data pinned, from
  :func:`sheafsim.diagnostics.pinned_discord`.

Figures are drawn with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure`
objects, never through ``pyplot``, so the report works without a display and
leaves the pyplot backend of the calling program unchanged.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sheafsim.errors import InvalidValueError
from sheafsim.run import Run, load_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ReportResult", "write_report", "FIGURE_WIDTH_IN", "DPI"]

logger = logging.getLogger(__name__)

FIGURE_WIDTH_IN = 7.0
"""Width of every figure in inches, 700 pixels at :data:`DPI`."""

DPI = 100
"""Resolution of the PNG files in dots per inch."""

_HEIGHT_IN = 4.0  # height of a one-panel figure
_EDGE_ORDER = {"affine": 0, "activation": 1, "output": 2}
# Rows of summary.json shown first in the report, in this order.
_SUMMARY_KEYS = (
    "status",
    "message",
    "steps",
    "wall_time_s",
    "total_time_s",
    "final_energy",
    "max_abs_error_vs_forward",
    "max_abs_error_vs_predict_proba",
    "test_accuracy",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "baseline",
    "schedule",
    "backend",
    "integrator",
    "dt",
    "n_actors",
    "ray_address",
    "run_id",
)


@dataclass
class ReportResult:
    """Files written by :func:`write_report`, with the problems found.

    Attributes
    ----------
    output_dir : pathlib.Path
        Directory of the report.
    figures : list of pathlib.Path
        PNG files written, in the order of the report.
    html : pathlib.Path
        The ``report.html`` file.
    problems : dict of str to str
        Files of the run that could not be read, and figures that could not be
        drawn, keyed by file name, with the reason.
    notes : list of str
        Figures left out, or drawn without part of their data, because the run
        has no data for them, with the reason.
    """

    output_dir: Path
    figures: list[Path]
    html: Path
    problems: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Context:
    """The run being reported on, with the problems and notes found so far."""

    run: Run
    problems: dict[str, str]
    notes: list[str]

    def missing(self, figure: str, *tables: str) -> bool:
        """Record why ``figure`` is left out if one of ``tables`` is unavailable."""
        for table in tables:
            file = f"{table}.parquet"
            if file in self.run.problems:
                self.notes.append(f"{figure} not drawn: {file} is unreadable")
                return True
            if table not in self.run.tables:
                self.notes.append(f"{figure} not drawn: the run has no {file}")
                return True
            if self.run.tables[table].num_rows == 0:
                self.notes.append(f"{figure} not drawn: {file} has no rows")
                return True
        return False


def _new_figure(panels: int = 1, height_in: float | None = None) -> Figure:
    from matplotlib.figure import Figure

    height = height_in if height_in is not None else _HEIGHT_IN + 2.2 * (panels - 1)
    return Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=DPI, layout="constrained")


def _column(table: pa.Table, name: str) -> np.ndarray:
    """Return a column as a float array, nulls as NaN."""
    return np.asarray(table[name].to_numpy(zero_copy_only=False), dtype=float)


def _plot_positive(ax: Axes, x: np.ndarray, y: np.ndarray, **style: Any) -> bool:
    """Plot the points with positive finite ``y``, and return False if there are none.

    Zeros and negative values have no place on a log axis, so they are left out.
    """
    keep = np.isfinite(y) & (y > 0)
    if not keep.any():
        return False
    if keep.sum() <= 2:
        style.setdefault("marker", "o")  # a line of one point is invisible
    ax.plot(x[keep], y[keep], **style)
    return True


def _colour(i: int, count: int) -> Any:
    """Colour of line ``i`` of ``count``: the default cycle, or a colour map
    when there are more lines than the cycle's ten colours."""
    if count <= 10:
        return f"C{i}"
    from matplotlib import colormaps

    return colormaps["viridis"](i / max(count - 1, 1))


def _legend(ax: Axes, count: int) -> None:
    """Place a legend of ``count`` entries, in columns beside the axes if long."""
    if count <= 8:
        ax.legend(fontsize=8, loc="best")
        return
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncol=1 + count // 16,
        borderaxespad=0,
    )


def _log_scale_if_wide(ax: Axes, *arrays: np.ndarray) -> None:
    """Use a log y axis when all values are positive and span a factor over 30.

    Over a narrower span a log axis has almost no labelled ticks, so the axis
    stays linear, and so it does when a value is zero or negative.
    """
    values = np.concatenate([np.ravel(array) for array in arrays])
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
        ax.set_yscale("log")


def _energy_figure(context: _Context) -> Figure | None:
    from matplotlib.ticker import MaxNLocator

    if context.missing("energy.png", "convergence"):
        return None
    run = context.run
    convergence = run["convergence"].sort_by("step")
    steps = _column(convergence, "step")
    energy = _column(convergence, "energy")
    crossings = _crossings_by_layer(run)
    figure = _new_figure(panels=2 if crossings else 1)
    if crossings:
        top, bottom = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
        )
    else:
        top, bottom = figure.subplots(), None
    if not _plot_positive(top, steps, energy, color="C0"):
        context.notes.append("energy.png not drawn: no positive finite energy")
        return None
    top.set_yscale("log")
    top.set_ylabel("sheaf energy (1/2 sum of edge discord)")
    top.set_title("Sheaf energy")
    top.grid(True, which="major", alpha=0.3)
    if bottom is None:
        note = _crossings_note(run)
        context.notes.append(f"energy.png: {note}")
        top.set_xlabel("step")
        top.text(
            0.98,
            0.95,
            note,
            transform=top.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.35",
        )
        return figure
    # Stacked bars, one colour per layer, so no layer hides another.
    at = np.unique(np.concatenate([steps_of for steps_of, _ in crossings.values()]))
    width = float(np.min(np.diff(at))) if at.size > 1 else 1.0
    stacked = np.zeros(at.size)
    layers = len(crossings)
    for i, (layer, (steps_of, counts)) in enumerate(sorted(crossings.items())):
        heights = np.zeros(at.size)
        heights[np.searchsorted(at, steps_of)] = counts
        bottom.bar(
            at,
            heights,
            width,
            bottom=stacked,
            color=f"C{i + 1}" if layers < 10 else _colour(i, layers),
            linewidth=0,
            label=f"layer {layer}",
        )
        stacked += heights
    if stacked.max() > 30 * stacked[stacked > 0].min():
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=0.7)  # a single crossing stays visible
    else:
        bottom.set_ylim(bottom=0)
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("step t")
    bottom.set_ylabel("masks changed\nin step t")
    bottom.set_title("ReLU boundary crossings", fontsize=10)
    _legend(bottom, layers)
    return figure


def _crossings_by_layer(run: Run) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Return ``layer -> (steps, crossings)`` from crossings.parquet, if any."""
    if "crossings" not in run.tables or run["crossings"].num_rows == 0:
        return {}
    summed = (
        run["crossings"]
        .group_by(["layer", "step"], use_threads=False)
        .aggregate([("crossings", "sum")])
        .sort_by([("layer", "ascending"), ("step", "ascending")])
    )
    result = {}
    for layer in pc.unique(summed["layer"]).to_pylist():
        rows = summed.filter(pc.equal(summed["layer"], layer))
        result[int(layer)] = (
            _column(rows, "step"),
            _column(rows, "crossings_sum"),
        )
    return result


def _crossings_note(run: Run) -> str:
    if "crossings.parquet" in run.problems:
        return "crossings.parquet unreadable: no crossings marked"
    if "crossings" in run.tables:
        return "no ReLU boundary crossings recorded"
    return "the run has no crossings.parquet: no crossings marked"


def _discord_lines_figure(context: _Context, by: str) -> Figure | None:
    name = f"discord_by_{by}.png"
    if context.missing(name, "edges"):
        return None
    over_time = context.run.discord_over_time(by)  # type: ignore[arg-type]
    figure = _new_figure()
    ax = figure.subplots()
    drawn = 0
    groups = list(dict.fromkeys(over_time["group"].to_pylist()))
    for i, group in enumerate(groups):
        rows = over_time.filter(pc.equal(over_time["group"], group))
        label = f"layer {group}" if by == "layer" else str(group)
        style = {"color": _colour(i, len(groups)), "label": label}
        drawn += _plot_positive(
            ax, _column(rows, "step"), _column(rows, "discord"), **style
        )
    if not drawn:
        context.notes.append(f"{name} not drawn: no positive finite discord")
        return None
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("discord (batch mean of |residual|^2)")
    kind = "edge type" if by == "type" else "layer (affine l + activation l, output)"
    ax.set_title(f"Edge discord by {kind}")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, drawn)
    return figure


def _edge_order(edges: pa.Table) -> list[str]:
    """Return the edge names in network order, then the pin edges by name."""
    kinds: dict[str, tuple[str, int | None]] = {}
    for name, kind, layer in zip(
        edges["edge"].to_pylist(),
        edges["edge_type"].to_pylist(),
        edges["layer"].to_pylist(),
        strict=True,
    ):
        kinds.setdefault(name, (kind, layer))

    def key(name: str) -> tuple[int, int, int, str]:
        kind, layer = kinds[name]
        if kind in _EDGE_ORDER and layer is not None:
            return (0, layer, _EDGE_ORDER[kind], name)
        return (1, 0, 0, name)

    return sorted(kinds, key=key)


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """Return the cell boundaries around sorted ``centres`` for pcolormesh."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[:-1] + centres[1:]) / 2
    first = centres[0] - (middle[0] - centres[0])
    last = centres[-1] + (centres[-1] - middle[-1])
    return np.concatenate([[first], middle, [last]])


def _heatmap_figure(context: _Context) -> Figure | None:
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    name = "discord_heatmap.png"
    if context.missing(name, "edges"):
        return None
    run = context.run
    over_time = run.discord_over_time("edge")
    names = _edge_order(run["edges"])
    steps = np.unique(_column(over_time, "step"))
    values = np.full((len(names), steps.size), np.nan)
    row_of = {edge: i for i, edge in enumerate(names)}
    columns = np.searchsorted(steps, _column(over_time, "step"))
    rows = [row_of[edge] for edge in over_time["group"].to_pylist()]
    values[rows, columns] = _column(over_time, "discord")
    positive = np.isfinite(values) & (values > 0)
    if not positive.any():
        context.notes.append(f"{name} not drawn: no positive finite discord")
        return None

    height = min(9.0, max(3.5, 1.6 + 0.28 * len(names)))
    figure = _new_figure(height_in=height)
    ax = figure.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    norm = LogNorm(vmin=values[positive].min(), vmax=values[positive].max())
    mesh = ax.pcolormesh(
        _cell_edges(steps),
        np.arange(len(names) + 1),
        np.ma.masked_where(~positive, values),
        cmap=cmap,
        norm=norm,
        shading="flat",
        rasterized=True,
    )
    ax.set_ylim(len(names), 0)  # the first edge of the network on top
    stride = max(1, math.ceil(len(names) / 30))
    ticks = np.arange(0, len(names), stride)
    ax.set_yticks(ticks + 0.5, [names[i] for i in ticks], fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("edge")
    ax.set_title("Discord of every edge")
    label = "discord (batch mean of |residual|^2)"
    if not positive.all():
        label += "\ngrey: zero or not recorded"
    figure.colorbar(mesh, ax=ax, label=label)
    return figure


def _vertex_key(vertex: str) -> tuple[int, int, int, str]:
    """Sort vertices in network order: x, z1, a1, z2, ..., y_out, then others."""
    if vertex == "x":
        return (0, 0, 0, vertex)
    if vertex[:1] in ("z", "a") and vertex[1:].isdigit():
        return (1, int(vertex[1:]), 0 if vertex[0] == "z" else 1, vertex)
    if vertex == "y_out":
        return (2, 0, 0, vertex)
    return (3, 0, 0, vertex)


def _is_async(run: Run) -> bool:
    """Return whether the run used the asynchronous schedule."""
    if run.summary is not None and run.summary.get("schedule") == "async":
        return True
    if "vertices" not in run.tables:
        return False
    vertices = run["vertices"]
    stepping = vertices.filter(pc.greater(vertices["steps"], 0))
    return len(pc.unique(stepping["steps"])) > 1


def _steps_figure(context: _Context) -> Figure | None:
    name = "steps_per_vertex.png"
    if context.missing(name, "vertices"):
        return None
    run = context.run
    vertices = run["vertices"]
    counters = dict(
        zip(vertices["vertex"].to_pylist(), vertices["steps"].to_pylist(), strict=True)
    )
    order = sorted(counters, key=_vertex_key)
    figure = _new_figure()
    ax = figure.subplots()
    heights = [counters[v] for v in order]
    bars = ax.bar(order, heights, color="C0", label="steps of the vertex")
    # Counts sit inside the bars, clear of the dashed line, and a zero on the axis.
    inside = [str(h) if h > 0 else "" for h in heights]
    ax.bar_label(bars, inside, label_type="center", fontsize=8, color="white")
    ax.bar_label(bars, ["0" if h == 0 else "" for h in heights], fontsize=8)
    top = max(heights, default=0)
    run_steps = (run.summary or {}).get("steps")
    if isinstance(run_steps, int):
        ax.axhline(run_steps, color="C3", ls="--", lw=1, label="steps of the run")
        top = max(top, run_steps)
    ax.set_ylim(0, 1.25 * top if top > 0 else 1)
    ax.legend(fontsize=8, loc="upper center", ncols=2)
    ax.set_xlabel("vertex actor")
    ax.set_ylabel("steps taken")
    schedule = (run.summary or {}).get("schedule", "unknown")
    ax.set_title(f"Steps per vertex actor ({schedule} schedule)")
    return figure


def _staleness_figure(context: _Context) -> Figure | None:
    name = "staleness.png"
    if context.missing(name, "staleness"):
        return None
    table = context.run["staleness"]
    vertices = sorted(set(table["vertex"].to_pylist()), key=_vertex_key)
    ages = sorted(set(table["staleness"].to_pylist()))
    counts = np.zeros((len(vertices), len(ages)))
    for vertex, age, steps in zip(
        table["vertex"].to_pylist(),
        table["staleness"].to_pylist(),
        table["steps"].to_pylist(),
        strict=True,
    ):
        counts[vertices.index(vertex), ages.index(age)] += steps

    figure = _new_figure()
    ax = figure.subplots()
    width = 0.8 / len(vertices)
    positions = np.arange(len(ages))
    for i, vertex in enumerate(vertices):
        offset = (i - (len(vertices) - 1) / 2) * width
        ax.bar(positions + offset, counts[i], width, color=f"C{i}", label=vertex)
    ax.set_xticks(positions, [str(age) for age in ages])

    top = counts.max()
    if top > 0 and counts[counts > 0].min() * 100 < top:
        ax.set_yscale("log")  # zero-height bars simply vanish on a log axis
        ax.set_ylim(top=top * 10)
    else:
        ax.set_ylim(0, 1.3 * top if top > 0 else 1)  # room for the legend
    ax.set_xlabel("staleness (steps by which the oldest message used lagged)")
    ax.set_ylabel("steps of the vertex")
    ax.set_title("Message staleness per vertex actor")
    ax.legend(
        fontsize=8,
        title="vertex",
        title_fontsize=8,
        loc="upper center",
        ncols=min(len(vertices), 6),
    )
    return figure


def _has_accuracy(*tables: pa.Table) -> bool:
    return any(
        table[column].null_count < table.num_rows
        for table in tables
        for column in ("train_accuracy", "test_accuracy")
    )


def _plot_series(
    ax: Axes, series: list[tuple[str, pa.Table, str]], metric: str
) -> list[np.ndarray]:
    """Plot ``train_<metric>`` and ``test_<metric>`` of each series.

    Colour marks train or test, and line style the sheaf run or the baseline.
    Returns the finite values plotted, one array per line that has any.
    """
    plotted = []
    for label, table, line in series:
        steps = _column(table, "step")
        for split, colour in (("train", "C0"), ("test", "C1")):
            values = _column(table, f"{split}_{metric}")
            keep = np.isfinite(values)
            if keep.any():
                plotted.append(values[keep])
            ax.plot(
                steps[keep],
                values[keep],
                ls=line,
                color=colour,
                marker="o" if keep.sum() <= 2 else None,
                label=f"{label}, {split}",
            )
    return plotted


def _loss_figure(context: _Context) -> Figure | None:
    name = "loss.png"
    if context.missing(name, "training"):
        return None
    run = context.run
    series = [("sheaf", run["training"].sort_by("step"), "-")]
    if "baseline" in run.tables and run["baseline"].num_rows:
        series.append(("gradient descent", run["baseline"].sort_by("step"), "--"))
    accuracy = _has_accuracy(*(table for _, table, _ in series))

    figure = _new_figure(panels=2 if accuracy else 1)
    axes = figure.subplots(2, 1, sharex=True) if accuracy else [figure.subplots()]
    losses = _plot_series(axes[0], series, "loss")
    if not losses:
        context.notes.append(f"{name} not drawn: no finite loss")
        return None
    _log_scale_if_wide(axes[0], *losses)
    axes[0].set_ylabel("loss")
    axes[0].set_title("Training loss")
    axes[0].grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")

    if accuracy:
        _plot_series(axes[1], series, "accuracy")
        axes[1].set_ylabel("accuracy")
        axes[1].set_ylim(0, 1.02)
        axes[1].grid(True, alpha=0.3)
        axes[1].set_title("Accuracy (lines as above)", fontsize=10)
    axes[-1].set_xlabel(
        "step (joint sheaf step; gradient step for the baseline)"
        if len(series) > 1
        else "step (joint sheaf step)"
    )
    status = (run.summary or {}).get("status")
    if status not in (None, "completed"):
        axes[0].set_title(f"Training loss (run {status})")
    return figure


def _spectra_figure(context: _Context) -> Figure | None:
    name = "lambda_min.png"
    if context.missing(name, "spectra"):
        return None
    spectra = context.run["spectra"].sort_by("step")
    steps = _column(spectra, "step")
    figure = _new_figure(panels=2)
    axes = figure.subplots(2, 1, sharex=True)
    for ax, which, colour in zip(axes, ("min", "max"), ("C0", "C3"), strict=True):
        median = _column(spectra, f"lambda_{which}_median")
        low = _column(spectra, f"lambda_{which}_q25")
        high = _column(spectra, f"lambda_{which}_q75")
        ax.fill_between(
            steps, low, high, color=colour, alpha=0.25, label="interquartile range"
        )
        ax.plot(steps, median, color=colour, marker="o", ms=3, label="median")
        _log_scale_if_wide(ax, low, median, high)
        ax.set_ylabel(f"lambda_{which}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    samples = spectra["samples"].to_pylist()
    inputs = f"{samples[-1]} inputs" if len(set(samples)) == 1 else "inputs"
    axes[0].set_title(f"Extreme eigenvalues of the free sheaf Laplacian ({inputs})")
    axes[1].set_xlabel("step")
    return figure


def _load_weights(path: Path) -> Any:
    """Build the network saved in the ``weights.npz`` of a training run."""
    from sheafsim.neural import NeuralSheaf

    with np.load(path, allow_pickle=False) as archive:
        files = list(archive.files)
        layers = sorted(
            int(key[1:]) for key in files if key.startswith("W") and key[1:].isdigit()
        )
        if not layers or layers != list(range(1, len(layers) + 1)):
            raise InvalidValueError(
                f"{path} must contain arrays W1, b1, W2, b2, ...; found {files}"
            )
        weights = [archive[f"W{i}"] for i in layers]
        biases = [archive[f"b{i}"] for i in layers]
        output = str(archive["output"]) if "output" in files else "identity"
    return NeuralSheaf(weights, biases, output=output)  # type: ignore[arg-type]


def _pinned_figure(context: _Context) -> Figure | None:
    name = "pinned_discord.png"
    run = context.run
    weights = run.path / "weights.npz"
    if not weights.exists():
        return None
    training = (run.config or {}).get("training")
    if not isinstance(training, dict) or not training.get("dataset"):
        context.notes.append(
            f"{name} not drawn: config.json names no training data set for weights.npz"
        )
        return None
    try:
        from sheafsim.datasets import load_dataset
        from sheafsim.diagnostics import pinned_discord

        try:
            net = _load_weights(weights)
        except (OSError, ValueError) as error:
            raise InvalidValueError(
                f"weights.npz is not a readable network archive ({error}); rerun "
                "the training to write it again"
            ) from None
        data = load_dataset(training["dataset"], seed=training.get("seed", 42))
        shape = (data.x_train.shape[0], data.y_train.shape[0])
        if (net.widths[0], net.widths[-1]) != shape:
            raise InvalidValueError(
                f"weights.npz has {net.widths[0]} inputs and {net.widths[-1]} "
                f"outputs, but the {training['dataset']} data set has {shape[0]} "
                f"and {shape[1]}; the file does not belong to this run"
            )
        result = pinned_discord(net, data.x_train, data.y_train)
        discord, status = result.discord, str(getattr(result, "status", ""))
        by_layer = {int(k): float(v) for k, v in discord.by_layer.items()}
        by_type = {str(k): float(v) for k, v in discord.by_type.items()}
        total = float(discord.total)
    except Exception as error:  # the report goes on without this figure
        context.problems[name] = (
            f"pinned discord of weights.npz on the {training['dataset']} training "
            f"data failed: {type(error).__name__}: {error}"
        )
        return None

    figure = _new_figure()
    layer_ax, type_ax = figure.subplots(1, 2, width_ratios=[3, 2])
    layers = sorted(by_layer)
    layer_ax.bar([str(layer) for layer in layers], [by_layer[k] for k in layers])
    layer_ax.set_xlabel("layer l: affine l + activation l (+ output)")
    layer_ax.set_ylabel("discord (batch mean of |residual|^2)")
    layer_ax.set_title("by layer", fontsize=10)
    types = sorted(by_type, key=lambda kind: _EDGE_ORDER.get(kind, 3))
    colours = [f"C{_EDGE_ORDER.get(kind, 3)}" for kind in types]
    type_ax.bar(types, [by_type[kind] for kind in types], color=colours)
    type_ax.set_xlabel("edge type")
    type_ax.set_title("by edge type", fontsize=10)
    values = np.array([*by_layer.values(), *by_type.values()])
    _log_scale_if_wide(layer_ax, values)
    _log_scale_if_wide(type_ax, values)
    details = f"total {total:.3g}" + (f", {status}" if status else "")
    figure.suptitle(
        f"Pinned discord on the {training['dataset']} training data ({details})"
    )
    return figure


_FIGURES: list[tuple[str, str, Callable[[_Context], Figure | None]]] = [
    ("energy.png", "Sheaf energy and ReLU boundary crossings", _energy_figure),
    (
        "discord_by_type.png",
        "Edge discord by edge type",
        lambda context: _discord_lines_figure(context, "type"),
    ),
    (
        "discord_by_layer.png",
        "Edge discord by layer",
        lambda context: _discord_lines_figure(context, "layer"),
    ),
    ("discord_heatmap.png", "Discord of every edge", _heatmap_figure),
    ("steps_per_vertex.png", "Steps per vertex actor", _steps_figure),
    ("staleness.png", "Message staleness per vertex actor", _staleness_figure),
    ("loss.png", "Training loss", _loss_figure),
    ("lambda_min.png", "Extreme eigenvalues of the free Laplacian", _spectra_figure),
    ("pinned_discord.png", "Discord with the training data pinned", _pinned_figure),
]


def _applies(name: str, run: Run) -> bool:
    """Return whether figure ``name`` belongs in the report of ``run``."""
    if name == "staleness.png":
        return _is_async(run) or "staleness" in run.tables
    if name == "steps_per_vertex.png":
        return "vertices" in run.tables or "vertices.parquet" in run.problems
    if name in ("loss.png", "lambda_min.png"):
        training = run.config is not None and run.config.get("training") is not None
        return training or "training" in run.tables
    if name.startswith("discord") or name == "energy.png":
        if "edges" in run.tables or "convergence" in run.tables:
            return True
        tables = ("edges.parquet", "convergence.parquet")
        return any(file in run.problems for file in tables)
    return True


def write_report(
    run_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None
) -> ReportResult:
    """Draw the figures of a run directory and write ``report.html``.

    Parameters
    ----------
    run_dir : str or path-like
        The run directory, as written by ``sheafsim run``.
    output_dir : str or path-like, optional
        Directory for the PNG files and ``report.html``, created if missing.
        Defaults to ``<run_dir>/report``. Files of an earlier report there are
        replaced.

    Returns
    -------
    ReportResult

    Raises
    ------
    sheafsim.run.RunReadError
        If ``run_dir`` is not a run directory.
    InvalidValueError
        If ``output_dir`` cannot be created.
    ImportError
        If matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise ImportError(
            "sheafsim report needs matplotlib; install it with 'pip install matplotlib'"
        ) from None

    run = load_run(run_dir, strict=False)
    output = Path(output_dir) if output_dir is not None else run.path / "report"
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".sheafsim-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InvalidValueError(
            f"cannot write the report into {output} ({error}); pass "
            "--output with a writable directory"
        ) from None

    context = _Context(run, dict(run.problems), [])
    figures: list[tuple[Path, str]] = []
    for name, caption, draw in _FIGURES:
        (output / name).unlink(missing_ok=True)
        if not _applies(name, run):
            continue
        try:
            figure = draw(context)
            if figure is None:
                continue
            FigureCanvasAgg(figure)
            figure.savefig(output / name, dpi=DPI)
        except Exception as error:  # one bad figure must not cost the others
            (output / name).unlink(missing_ok=True)
            context.problems[name] = (
                f"drawing {name} failed: {type(error).__name__}: {error}; the "
                "other figures are drawn"
            )
            continue
        figures.append((output / name, caption))
        logger.info("wrote %s", output / name)

    page = output / "report.html"
    page.write_text(_html(run, figures, context), encoding="utf-8")
    return ReportResult(
        output_dir=output,
        figures=[path for path, _ in figures],
        html=page,
        problems=context.problems,
        notes=context.notes,
    )


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_format(item)}" for key, item in value.items())
    if value is None:
        return "null"
    return str(value)


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    keys = [key for key in _SUMMARY_KEYS if key in summary]
    keys += [key for key in summary if key not in _SUMMARY_KEYS]
    return [(key, _format(summary[key])) for key in keys]


_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 1.5em auto; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
th { background: #eee; }
figure { margin: 1.5em 0; }
.problem { color: #a00; }
"""


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> list[str]:
    lines = ["<table>", f"<tr><th>{head[0]}</th><th>{head[1]}</th></tr>"]
    for key, value in rows:
        lines.append(
            f"<tr><td>{html.escape(key)}</td><td>{html.escape(value)}</td></tr>"
        )
    lines.append("</table>")
    return lines


def _html(run: Run, figures: list[tuple[Path, str]], context: _Context) -> str:
    """Return the text of report.html."""
    run_id = (run.summary or run.config or {}).get("run_id", "")
    title = f"sheafsim run {run_id}".strip()
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Run directory: <code>{html.escape(str(run.path.resolve()))}</code></p>",
        "<h2>Summary</h2>",
    ]
    if run.summary is not None:
        lines += _table(_summary_rows(run.summary), ("summary.json", "value"))
    elif "summary.json" in run.problems:
        lines.append("<p>summary.json is unreadable; see the problems below.</p>")
    else:
        lines.append(
            "<p>The run has no summary.json: it is still going on, or it was "
            "stopped before it ended.</p>"
        )
    counts = [
        (f"{name}.parquet", str(table.num_rows)) for name, table in run.tables.items()
    ]
    lines += ["<h2>Tables</h2>", *_table(counts, ("table", "rows"))]

    lines.append("<h2>Problems</h2>")
    if context.problems:
        lines.append("<ul>")
        for file, message in context.problems.items():
            lines.append(
                f'<li class="problem"><code>{html.escape(file)}</code>: '
                f"{html.escape(message)}</li>"
            )
        lines.append("</ul>")
    else:
        lines.append("<p>None: every file of the run was read.</p>")
    if context.notes:
        lines.append("<h2>Notes</h2><ul>")
        lines += [f"<li>{html.escape(note)}</li>" for note in context.notes]
        lines.append("</ul>")

    lines.append("<h2>Figures</h2>")
    for path, caption in figures:
        lines += [
            "<figure>",
            f'<img src="{html.escape(path.name)}" alt="{html.escape(caption)}">',
            f"<figcaption>{html.escape(caption)} ({html.escape(path.name)})"
            "</figcaption>",
            "</figure>",
        ]
    if run.config is not None:
        config = json.dumps(run.config, indent=2)
        lines += [
            "<h2>Configuration</h2>",
            "<details><summary>config.json</summary>",
            f"<pre>{html.escape(config)}</pre></details>",
        ]
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines)
