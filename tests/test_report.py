import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread
from run_configs import DIFFUSION

from sheafsim.cli import main
from sheafsim.recording import RunRecorder, remove_table
from sheafsim.report import DPI, FIGURE_WIDTH_IN, write_report
from sheafsim.run import RunReadError, load_run

ASYNC = """
[network]
source = "random"
widths = [3, 4, 2]
seed = 1
[data]
dataset = "random"
samples = 4
[diffusion]
tol = 1e-6
integrator = "nesterov"
[runtime]
backend = "actors"
schedule = "async"
staleness_bound = 2
report_every = 5
"""

# A classification run, so the loss figure has its accuracy panel.
TRAINING = """
[network]
source = "random"
widths = [2, 8, 4]
output = "softmax"
seed = 0
[training]
dataset = "blobs"
seed = 42
epochs = 2
steps_per_epoch = 50
baseline_lr = 0.05
spectral_every = 25
spectral_samples = 8
[runtime]
backend = "inprocess"
"""

WIDTH_PX = round(FIGURE_WIDTH_IN * DPI)
ONE_PANEL_PX = 400
TWO_PANELS_PX = 620
HEATMAP_PX = 350  # six edges: the minimum height of 3.5 in


def run_config(root, name, text):
    config = root / f"{name}.toml"
    config.write_text(text)
    out = root / name
    assert main(["run", str(config), "--output", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory):
    run_dir = run_config(tmp_path_factory.mktemp("report"), "diffusion", DIFFUSION)
    return run_dir, write_report(run_dir)


@pytest.fixture(scope="module")
def async_run(tmp_path_factory, local_ray):
    run_dir = run_config(tmp_path_factory.mktemp("report"), "async", ASYNC)
    return run_dir, write_report(run_dir)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    run_dir = run_config(tmp_path_factory.mktemp("report"), "training", TRAINING)
    return run_dir, write_report(run_dir)


def copy_run(run_dir, destination):
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("report"))
    return destination


def check_png(path, height):
    assert path.stat().st_size < 150_000, path.name
    pixels = imread(path)
    assert pixels.shape[:2] == (height, WIDTH_PX), path.name
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, f"{path.name} is almost blank"
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path.name} has only {len(colours)} colours"


def names(result):
    return [path.name for path in result.figures]


def test_diffusion_figures(diffusion):
    run_dir, result = diffusion
    assert result.output_dir == run_dir / "report"
    assert names(result) == [
        "energy.png",
        "discord_by_type.png",
        "discord_by_layer.png",
        "discord_heatmap.png",
    ]
    assert result.problems == {}


def test_diffusion_png_sizes(diffusion):
    run_dir, result = diffusion
    crossings = load_run(run_dir).tables.get("crossings")
    marked = crossings is not None and crossings.num_rows > 0
    heights = {
        "energy.png": TWO_PANELS_PX if marked else ONE_PANEL_PX,
        "discord_by_type.png": ONE_PANEL_PX,
        "discord_by_layer.png": ONE_PANEL_PX,
        "discord_heatmap.png": HEATMAP_PX,
    }
    for path in result.figures:
        assert path.parent == result.output_dir
        check_png(path, heights[path.name])


def test_html_references_figures(diffusion):
    run_dir, result = diffusion
    assert result.html == result.output_dir / "report.html"
    text = result.html.read_text()
    for path in result.figures:
        assert f'<img src="{path.name}"' in text
    run = load_run(run_dir)
    assert f"sheafsim run {run.summary['run_id']}" in text
    assert "<td>status</td><td>converged</td>" in text
    assert f"<td>steps</td><td>{run.summary['steps']}</td>" in text
    assert "<td>final_energy</td>" in text
    assert "<td>max_abs_error_vs_forward</td>" in text
    rows = run["convergence"].num_rows
    assert f"<td>convergence.parquet</td><td>{rows}</td>" in text
    assert "None: every file of the run was read." in text


def test_async_figures(async_run):
    run_dir, result = async_run
    assert load_run(run_dir).summary["schedule"] == "async"
    assert "steps_per_vertex.png" in names(result)
    assert "staleness.png" in names(result)
    assert result.problems == {}
    for name in ("steps_per_vertex.png", "staleness.png"):
        check_png(result.output_dir / name, ONE_PANEL_PX)
    text = result.html.read_text()
    assert '<img src="staleness.png"' in text
    assert "<td>schedule</td><td>async</td>" in text


def test_training_figures(training):
    run_dir, result = training
    assert names(result) == ["loss.png", "lambda_min.png", "pinned_discord.png"]
    assert result.problems == {}
    run = load_run(run_dir)
    assert "baseline" in run.tables
    assert run["spectra"].num_rows == 5
    check_png(result.output_dir / "loss.png", TWO_PANELS_PX)
    check_png(result.output_dir / "lambda_min.png", TWO_PANELS_PX)
    check_png(result.output_dir / "pinned_discord.png", ONE_PANEL_PX)
    text = result.html.read_text()
    for name in names(result):
        assert f'<img src="{name}"' in text


def test_energy_without_crossings_table(diffusion, tmp_path):
    copy = copy_run(diffusion[0], tmp_path / "run")
    remove_table(copy / "crossings.parquet")
    result = write_report(copy)
    assert "energy.png: the run has no crossings.parquet" in " ".join(result.notes)
    check_png(result.output_dir / "energy.png", ONE_PANEL_PX)


def test_energy_with_empty_crossings_table(diffusion, tmp_path):
    copy = copy_run(diffusion[0], tmp_path / "run")
    remove_table(copy / "crossings.parquet")
    RunRecorder(copy, "r", tables=("crossings",)).close()
    result = write_report(copy)
    assert "energy.png: no ReLU boundary crossings recorded" in result.notes
    check_png(result.output_dir / "energy.png", ONE_PANEL_PX)


def test_corrupt_edges_table(diffusion, tmp_path):
    copy = copy_run(diffusion[0], tmp_path / "run")
    (copy / "edges.parquet").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(RunReadError, match=r"edges\.parquet"):
        load_run(copy)
    result = write_report(copy)
    assert names(result) == ["energy.png"]
    check_png(result.figures[0], TWO_PANELS_PX)
    assert list(result.problems) == ["edges.parquet"]
    assert "discord_heatmap.png not drawn: edges.parquet is unreadable" in result.notes
    text = result.html.read_text()
    assert '<li class="problem"><code>edges.parquet</code>' in text
    assert "corrupt or unreadable" in text


def test_report_replaces_stale_figures(diffusion, tmp_path):
    output = tmp_path / "report"
    assert write_report(diffusion[0], output).figures
    assert (output / "discord_heatmap.png").exists()
    copy = copy_run(diffusion[0], tmp_path / "run")
    (copy / "edges.parquet").write_bytes(b"garbage")
    write_report(copy, output)
    assert (output / "energy.png").exists()
    assert not (output / "discord_heatmap.png").exists()


def test_cli_report(diffusion, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["report", str(diffusion[0]), "--output", str(output)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(output / "report.html")
    assert printed[1:] == [str(output / name) for name in names(diffusion[1])]


def test_cli_corrupt_table_exit_3(diffusion, tmp_path, capsys):
    copy = copy_run(diffusion[0], tmp_path / "run")
    (copy / "edges.parquet").write_bytes(b"\x00garbage" * 64)
    assert main(["report", str(copy)]) == 3
    captured = capsys.readouterr()
    assert str(copy / "report" / "energy.png") in captured.out
    assert "sheafsim: problem: edges.parquet: " in captured.err
    assert (copy / "report" / "report.html").exists()


def test_cli_empty_directory_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run directory" in capsys.readouterr().err


def test_cli_unrelated_directory_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"sheafsim: error: {tmp_path} is not a run directory" in err
    assert "config.json, summary.json or Parquet tables" in err
    assert not (tmp_path / "report").exists()


def test_cli_missing_path_exit_2(tmp_path, capsys):
    path = tmp_path / "absent"
    assert main(["report", str(path)]) == 2
    assert f"run directory {path} not found" in capsys.readouterr().err


def test_infinite_discord_costs_only_its_figures(diffusion, tmp_path):
    copy = copy_run(diffusion[0], tmp_path / "run")
    edges = pq.read_table(copy / "edges.parquet")
    discord = np.array(edges["discord"].to_pylist())
    discord[::3] = np.inf
    index = edges.schema.get_field_index("discord")
    edges = edges.set_column(index, "discord", pa.array(discord))
    pq.write_table(edges, copy / "edges.parquet")
    result = write_report(copy)
    assert "energy.png" in names(result)
    assert result.html.exists()
    for name, message in result.problems.items():
        assert name.startswith("discord"), name
        assert "the other figures are drawn" in message


def test_training_config_not_a_table(training, tmp_path):
    copy = copy_run(training[0], tmp_path / "run")
    config = json.loads((copy / "config.json").read_text())
    config["training"] = "paraboloid"
    (copy / "config.json").write_text(json.dumps(config))
    result = write_report(copy)
    assert "pinned_discord.png" not in names(result)
    assert any(note.startswith("pinned_discord.png not drawn") for note in result.notes)


def test_corrupt_weights_named(training, tmp_path):
    copy = copy_run(training[0], tmp_path / "run")
    (copy / "weights.npz").write_bytes(b"\x00not an archive" * 8)
    result = write_report(copy)
    message = result.problems["pinned_discord.png"]
    assert "weights.npz is not a readable network archive" in message
    assert "rerun the training" in message


def test_cli_output_not_writable_exit_2(diffusion, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert main(["report", str(diffusion[0]), "--output", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the report into {blocker}" in err
    assert "writable directory" in err
