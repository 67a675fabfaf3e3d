"""Shared pieces of the experiments: report sections, comparisons, CSV and numbers."""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.settings import POINT_TOLERANCE  # noqa: E402

__all__ = [
    "Comparison",
    "Section",
    "write_csv",
    "save_figure",
    "plt",
    "fmt",
    "mean_sd",
    "finite",
    "value_at_step",
    "point_verdict",
    "range_verdict",
    "markdown_table",
    "format_widths",
    "reflow",
]


@dataclass(frozen=True)
class Comparison:
    """One recorded claim set against the measured value, with a verdict."""

    claim: str
    recorded: str
    measured: str
    verdict: str


@dataclass
class Section:
    """The Markdown of one experiment, its comparisons, files and run times.

    ``run_seconds`` sums the elapsed time of the runs the experiment uses, so a
    run shared with another experiment counts in both.
    """

    name: str
    title: str
    body: str
    comparisons: list[Comparison] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    run_seconds: float = 0.0
    n_runs: int = 0


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts with the same keys) to ``path`` and return the path.

    Floats are written with 7 significant digits and None as an empty field.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(value) for key, value in row.items()})
    return path


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return value


def save_figure(figure: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG at 120 dpi, close it and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def finite(values: Iterable[Any]) -> list[float]:
    """Return the finite numbers of ``values``, dropping None and NaN."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits, and None or NaN as '-'."""
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def mean_sd(values: Iterable[Any], digits: int = 3) -> str:
    """Format the mean and standard deviation of the finite ``values``."""
    numbers = finite(values)
    if not numbers:
        return "-"
    if len(numbers) == 1:
        return fmt(numbers[0], digits)
    return f"{fmt(np.mean(numbers), digits)} ± {fmt(np.std(numbers), 2)}"


def value_at_step(
    history: dict[str, list], step: int, key: str = "train_loss"
) -> tuple[int, float] | None:
    """Return the step and value of the last history row at or before ``step``."""
    best = None
    for recorded_step, value in zip(history["step"], history[key], strict=True):
        if recorded_step <= step:
            best = (int(recorded_step), value)
    return best


def point_verdict(recorded: float, measured: float) -> str:
    """Return 'agrees' when ``measured`` is within POINT_TOLERANCE of ``recorded``."""
    if not math.isfinite(measured):
        return "differs (no finite value)"
    ratio = measured / recorded
    if 1.0 / POINT_TOLERANCE <= ratio <= POINT_TOLERANCE:
        return "agrees"
    return f"differs ({fmt(ratio, 2)}x the recorded value)"


def range_verdict(low: float, high: float, measured: Sequence[float]) -> str:
    """Return 'agrees' when every measured value lies in ``[low, high]``."""
    numbers = finite(measured)
    if not numbers:
        return "differs (no finite value)"
    outside = [v for v in numbers if not low <= v <= high]
    if not outside:
        return "agrees"
    return f"differs ({len(outside)} of {len(numbers)} outside)"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Return a Markdown table; cells are converted with ``str``."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def format_widths(widths: Sequence[int]) -> str:
    """Return widths as written in the report, for example ``[2, 30, 1]``."""
    return "[" + ", ".join(str(w) for w in widths) + "]"


def reflow(markdown: str, width: int = 80) -> str:
    """Rewrap the plain paragraphs of ``markdown`` to ``width`` columns.

    Tables, images, lists, headings and code blocks are left as they are.
    """
    blocks = []
    for block in markdown.split("\n\n"):
        if block.lstrip().startswith(("|", "!", "```", "-", "#")):
            blocks.append(block)
            continue
        blocks.append(
            textwrap.fill(
                " ".join(block.split()),
                width=width,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n\n".join(blocks)
