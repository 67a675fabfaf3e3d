import json
import subprocess
import sys

import numpy as np
import pytest

from sheafsim.cli import main


def test_run_digits_inprocess_all_samples(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(
        [
            "run",
            "examples/digits.toml",
            "--output",
            str(out),
            "--quiet",
            "--set",
            "runtime.backend=inprocess",
        ]
    )
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "converged"
    assert summary["samples"] == 1797
    assert summary["max_abs_error_vs_predict_proba"] < 1e-6
    assert summary["test_accuracy"] > 0.9
    assert np.load(out / "outputs.npy").shape == (10, 1797)
    config = json.loads((out / "config.json").read_text())
    assert config["runtime"]["backend"] == "inprocess"
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "converged"


@pytest.mark.usefixtures("local_ray")
def test_run_digits_on_actors_subset(tmp_path):
    out = tmp_path / "run"
    status = main(
        [
            "run",
            "examples/digits.toml",
            "--output",
            str(out),
            "--quiet",
            "--set",
            "data.samples=100",
        ]
    )
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "converged"
    assert summary["backend"] == "actors"
    assert summary["n_actors"] == 6
    assert summary["max_abs_error_vs_predict_proba"] < 1e-6


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_run_digits_on_actors_full(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "examples/digits.toml", "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 1797
    assert summary["max_abs_error_vs_predict_proba"] < 1e-6


def test_run_random_network_npz(tmp_path):
    weights = {
        "W1": np.eye(3)[:2] * 0.5,
        "b1": np.zeros(2),
        "W2": np.ones((1, 2)),
        "b2": np.zeros(1),
    }
    np.savez(tmp_path / "net.npz", **weights)
    config = tmp_path / "npz.toml"
    config.write_text(
        '[network]\nsource = "npz"\npath = "net.npz"\n'
        '[data]\ndataset = "random"\nsamples = 7\n'
        "[diffusion]\ntol = 1e-10\n"
        '[runtime]\nbackend = "inprocess"\n'
    )
    assert main(["run", str(config), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["max_abs_error_vs_forward"] < 1e-8
    assert summary["widths"] == [3, 2, 1]


def test_run_reports_config_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[diffusion]\nspeed = 3\n")
    assert main(["run", str(config), "--quiet"]) == 2
    assert "unknown key diffusion.speed" in capsys.readouterr().err


def test_run_rejects_bad_set(capsys):
    assert main(["run", "examples/digits.toml", "--set", "tol"]) == 2
    assert "write --set table.key=value" in capsys.readouterr().err


def test_run_missing_npz(tmp_path, capsys):
    config = tmp_path / "npz.toml"
    config.write_text('[network]\nsource = "npz"\npath = "absent.npz"\n')
    assert main(["run", str(config), "--quiet"]) == 2
    assert "network.path 'absent.npz'" in capsys.readouterr().err


def test_bench_quick_writes_report(tmp_path):
    report = tmp_path / "bench.md"
    assert (
        main(["bench", "--quick", "--only", "heat_step", "--output", str(report)]) == 0
    )
    text = report.read_text()
    assert "Heat step against the forward pass" in text
    assert "[64, 128, 128, 10]" in text
    # A second partial run keeps the first section.
    assert (
        main(["bench", "--quick", "--only", "steps_to_tol", "--output", str(report)])
        == 0
    )
    text = report.read_text()
    assert "Heat step against the forward pass" in text
    assert "Steps to tolerance" in text


def test_bench_unknown_name(capsys):
    assert main(["bench", "--only", "warp", "--output", "/dev/null"]) == 2
    assert "unknown benchmark 'warp'" in capsys.readouterr().err


def test_console_script_help():
    done = subprocess.run(
        [sys.executable, "-m", "sheafsim.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "run" in done.stdout


@pytest.mark.parametrize(
    "text,expected",
    [("1e-8", 1e-8), ("inprocess", "inprocess"), ("[1, 2]", [1, 2]), ('"x"', "x")],
)
def test_set_value_parsing(text, expected):
    from sheafsim.cli import _parse_value

    assert _parse_value(text) == expected
