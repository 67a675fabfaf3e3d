"""The Markdown report: setup, machine, agreement summary, sections, wall times."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sheafsim
from training.common import Section, markdown_table, reflow
from training.settings import POINT_TOLERANCE, Settings


@dataclass(frozen=True)
class RunInfo:
    """Command line, worker count, elapsed time and machine load of one run."""

    command: str
    workers: int
    elapsed_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines() -> list[str]:
    """Return Markdown list items that describe this machine and its software."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"- CPU: {_cpu_model()}, `os.cpu_count()` = {os.cpu_count()}, "
        f"usable by this process: {usable if usable is not None else 'unknown'}",
        f"- platform: {platform.platform()}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, "
        f"sheafsim {sheafsim.__version__}",
    ]


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _agreement(sections: Sequence[Section]) -> str:
    rows = []
    for section in sections:
        for comparison in section.comparisons:
            rows.append(
                [
                    section.title.split(".", 1)[0],
                    comparison.claim,
                    comparison.recorded,
                    comparison.measured,
                    comparison.verdict,
                ]
            )
    if not rows:
        return "The experiments of this run have no recorded numbers to compare with."
    agreeing = sum(row[-1] == "agrees" for row in rows)
    table = markdown_table(["exp.", "claim", "recorded", "this run", "verdict"], rows)
    partly = sum(row[-1] == "partly agrees" for row in rows)
    partly_verb = "agrees" if partly == 1 else "agree"
    return f"""{agreeing} of {len(rows)} recorded claims agree with this run and
{partly} partly {partly_verb}. A single recorded value agrees when the measured mean is
within a factor {POINT_TOLERANCE:g} of it either way. A recorded range agrees
when every measured value lies inside it. A recorded regime boundary agrees
when it lies between the grid points on either side of the measured boundary,
widened by the same factor. The depth claim agrees when both of its measures
grow with depth. The recorded numbers are the ones recorded by the paper's
authors (arXiv:2603.14831) for the same recipes.

{table}"""


def _wall_times(sections: Sequence[Section], info: RunInfo) -> str:
    rows = [
        [section.title, section.n_runs, f"{section.run_seconds:.1f}"]
        for section in sections
    ]
    table = markdown_table(["experiment", "runs", "sum of run times (s)"], rows)
    return f"""A run's time counts its training, its loss evaluations and, where
asked, its eigenvalues. Runs that two experiments share count in both, so the
column sums to more than the work done. The whole script took
{info.elapsed_s:.1f} s on {info.workers} worker process(es); the 1-minute load
average of the machine was {info.load_before[0]:.2f} at the start and
{info.load_after[0]:.2f} at the end (1, 5 and 15 minutes:
{_load(info.load_before)} and {_load(info.load_after)}). The load includes the
{info.workers} worker process(es) themselves. Other jobs on the machine slow the
runs, so the per-run times in the tables above follow the load of the moment:
compare them only loosely.

{table}"""


def _run_size(settings: Settings) -> str:
    """Return the paragraph that states how this run was sized."""
    grid = len(settings.beta_n_grid)
    return f"""Run size. The recipes train {settings.total_steps} joint steps per
sheaf run and {settings.gd_steps} full-batch steps per gradient-descent run. To
finish in about 25 minutes on a 2-core machine shared with other jobs, this
run uses seeds {_seeds(settings.seeds)} only where numbers were recorded or a
spread is shown (the paraboloid `[2, 30, 1]` configuration, the learning-rate
law and the depth experiment) and seed {_seeds(settings.configuration_seeds)}
for the other seven configurations. The learning-rate grid has {grid} points,
every depth trains up to T = {settings.depth_max_time:g}, and each digits run
takes {settings.digits_epochs * settings.digits_steps_per_epoch} steps."""


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def write_report(
    path: Path, settings: Settings, sections: Sequence[Section], info: RunInfo
) -> Path:
    """Write the Markdown report to ``path`` and return the path."""
    today = datetime.date.today().isoformat()
    introduction = f"""Sheaf training without a backward pass against full-batch
gradient descent, after Bosca and Ghrist (arXiv:2603.14831).
`examples/run_training_experiments.py` writes this file and the CSV files and
figures in `{path.with_suffix("").name}/`. Rerun it to refresh them."""
    parts = ["# Training experiments", "", reflow(introduction), ""]
    if settings.quick:
        quick = """**Quick run.** This file comes from `--quick`, which shortens
every run to a few hundred steps and one seed. Its numbers check that the
script works and are not comparable with the recorded ones."""
        parts += [reflow(quick), ""]
    parts += [
        "## Setup",
        "",
        f"Command, run on {today} from the repository root:",
        "",
        "```bash",
        info.command,
        "```",
        "",
        *machine_lines(),
        f"- worker processes: {info.workers}, one BLAS thread each",
        "",
    ]
    if not settings.quick:
        parts += [reflow(_run_size(settings)), ""]
    parts += [
        "## Agreement with the recorded numbers",
        "",
        reflow(_agreement(sections)),
    ]
    for section in sections:
        parts += ["", f"## {section.title}", "", reflow(section.body)]
    parts += ["", "## Wall times", "", reflow(_wall_times(sections, info)), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
