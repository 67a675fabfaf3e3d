"""Smoke tests of examples/run_training_experiments.py in quick mode."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
image = pytest.importorskip("matplotlib.image")

SCRIPT = (
    Path(__file__).resolve().parents[1] / "examples" / "run_training_experiments.py"
)
CSV_FILES = (
    "configurations.csv",
    "configurations_checkpoints.csv",
    "learning_rate_law.csv",
    "depth.csv",
    "depth_spectrum.csv",
    "digits.csv",
    "digits_curves.csv",
)
FIGURES = ("configurations.png", "learning_rate_law.png", "depth.png", "digits.png")
SECTION_TITLES = (
    "## 1. Sheaf training against gradient descent",
    "## 2. Learning-rate law",
    "## 3. Depth against integration time",
    "## 4. Digits",
    "## Agreement with the recorded numbers",
    "## Wall times",
)


def run_script(output: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output), *arguments],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("quick") / "experiments.md"
    return output, run_script(output)


def test_quick_run_exits_zero(quick_run):
    _, completed = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_report_lists_every_section(quick_run):
    output, _ = quick_run
    text = output.read_text()
    assert "--quick" in text
    assert "Quick run." in text
    for title in SECTION_TITLES:
        assert title in text, f"missing section {title!r}"


def test_report_links_existing_figures(quick_run):
    output, _ = quick_run
    text = output.read_text()
    for name in FIGURES:
        assert f"](experiments/{name})" in text
        assert (output.parent / "experiments" / name).is_file()


@pytest.mark.parametrize("name", CSV_FILES)
def test_csv_has_header_and_rows(quick_run, name):
    output, _ = quick_run
    path = output.parent / "experiments" / name
    assert path.stat().st_size > 0
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{name} has a header but no rows"
    assert all(None not in row for row in rows), f"{name} has ragged rows"


@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_not_blank(quick_run, name):
    output, _ = quick_run
    pixels = image.imread(output.parent / "experiments" / name)
    assert pixels.ndim == 3
    assert pixels.shape[0] >= 200
    assert pixels.shape[1] >= 300
    colours = pixels[..., :3].reshape(-1, 3)
    assert np.ptp(colours, axis=0).max() > 0.5, "the figure is a single colour"


def test_learning_rate_law_csv_has_grid(quick_run):
    output, _ = quick_run
    with (output.parent / "experiments" / "learning_rate_law.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {float(row["beta_n_train"]) for row in rows} == {0.1, 1.0, 30.0}
    assert {row["status"] for row in rows} <= {"completed", "diverged"}


def test_only_writes_one_section(tmp_path):
    output = tmp_path / "digits.md"
    completed = run_script(output, "--only", "digits", "--workers", "1")
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = output.read_text()
    assert "## 4. Digits" in text
    assert "## 1. Sheaf training" not in text
    assert (tmp_path / "digits" / "digits.csv").is_file()
    assert not (tmp_path / "digits" / "configurations.csv").exists()


def test_invalid_worker_count_is_rejected(tmp_path):
    completed = run_script(tmp_path / "x.md", "--workers", "0")
    assert completed.returncode == 2
    assert "use at least 1 worker" in completed.stderr


def fake_sheaf_result(task, test_loss: float, diverged: bool) -> dict:
    """Return a result shaped like training.tasks.run_sheaf's, without training."""
    steps = [0, task.steps_per_epoch]
    losses = [2.0, test_loss]
    return {
        "status": "diverged" if diverged else "completed",
        "steps": 7 if diverged else steps[-1],
        "diverged_at_step": 7 if diverged else None,
        "dt": 0.005,
        "wall_time_s": 0.1,
        "elapsed_s": 0.1,
        "history": {
            "step": steps,
            "time": [0.005 * s for s in steps],
            "train_loss": losses,
            "test_loss": losses,
        },
        "train_loss": float("nan") if diverged else test_loss,
        "test_loss": float("nan") if diverged else test_loss,
        "train_accuracy": None,
        "test_accuracy": None,
    }


def test_learning_rate_law_reports_divergence(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from training import learning_rate_law
    from training.settings import QUICK

    # Loss falls with the rate, and the largest rate diverges.
    test_loss = {0.1: 0.5, 1.0: 0.1}
    results = {
        task: fake_sheaf_result(
            task, test_loss.get(task.beta_n, 0.0), diverged=task.beta_n == 30.0
        )
        for task in learning_rate_law.tasks(QUICK)
    }
    section = learning_rate_law.summarise(QUICK, results, tmp_path, "")

    with (tmp_path / "learning_rate_law.csv").open() as handle:
        rows = {float(row["beta_n_train"]): row for row in csv.DictReader(handle)}
    assert rows[30.0]["status"] == "diverged"
    assert rows[30.0]["diverged_at_step"] == "7"
    assert rows[1.0]["status"] == "completed"
    assert "| 30 | - | - | 1 of 1 (at step 7) | diverged |" in section.body
    assert "| 0.1 | 0.5 | 0.5 | 0 of 1 | stagnation |" in section.body
    verdicts = {c.claim: c for c in section.comparisons}
    upper = verdicts["training degrades or diverges above beta * n_train of about"]
    assert "first divergence at 30" in upper.measured
    assert (tmp_path / "learning_rate_law.png").stat().st_size > 0
