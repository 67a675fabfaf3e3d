"""Parquet tables streamed by the coordinator of an actor run (real Ray)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

import sheafsim as ss
from sheafsim.errors import InvalidValueError, RuntimeFailure
from sheafsim.recording import EDGE_TYPES, SCHEMAS, read_table
from sheafsim.runtime import diffuse_on_actors

pytestmark = pytest.mark.usefixtures("local_ray")

TABLES = ("convergence", "edges", "vertices")


@pytest.fixture(scope="module")
def small():
    net = ss.NeuralSheaf.random([2, 4, 3, 1], seed=0, output="sigmoid")
    x = np.random.default_rng(0).normal(size=(2, 5))
    return net, x


def read_all(directory):
    return {name: read_table(directory / f"{name}.parquet") for name in TABLES}


def test_sync_tables_match_schema_and_report_interval(tmp_path, small):
    net, x = small
    every = 5
    result = diffuse_on_actors(
        net, x, dt=0.1, tol=1e-3, report_every=every, record_dir=tmp_path
    )
    assert result.converged
    tables = read_all(tmp_path)
    for name, table in tables.items():
        # One compacted file per table, with exactly the documented schema.
        assert (tmp_path / f"{name}.parquet").is_file()
        assert table.schema.equals(SCHEMAS[name])
        assert pq.read_table(tmp_path / f"{name}.parquet").schema.equals(SCHEMAS[name])

    convergence = tables["convergence"].to_pydict()
    steps = result.steps
    expected = list(range(every, steps + 1, every))
    # One row per report interval up to the stopping step, then the final row.
    assert convergence["step"] == [*expected, steps]
    assert result.table_rows["convergence"] == len(expected) + 1
    assert set(convergence["run_id"]) == {result.run_id}
    assert convergence["error_vs_exact"][:-1] == [None] * len(expected)
    assert convergence["error_vs_exact"][-1] == pytest.approx(result.error_vs_exact)
    forward = net.forward(x)
    exact = max(
        np.max(np.abs(result.state[v] - forward.state[v])) for v in net.free_vertices
    )
    assert result.error_vs_exact == pytest.approx(exact, rel=1e-12)
    # The streamed rows carry the coordinator's energy trace and change history.
    trace = dict(
        zip(result.energy_trace["step"], result.energy_trace["energy"], strict=True)
    )
    for step, energy, change in zip(
        convergence["step"][:-1],
        convergence["energy"][:-1],
        convergence["max_update"][:-1],
        strict=True,
    ):
        assert energy == pytest.approx(trace[step - 1], rel=1e-12)
        assert change == result.max_change_history[step - 1]
    assert np.all(np.diff(convergence["time_s"]) >= 0)

    edges = tables["edges"].to_pydict()
    names = [info.name for info in net.edges]
    assert len(edges["edge"]) == len(names) * len(convergence["step"])
    assert set(edges["edge_type"]) <= set(EDGE_TYPES)
    kinds = {info.name: (info.kind, info.layer) for info in net.edges}
    for edge, kind, layer in zip(
        edges["edge"], edges["edge_type"], edges["layer"], strict=True
    ):
        assert kinds[edge] == (kind, layer)
    # Half the summed discord of a step is the energy of its convergence row.
    by_step: dict[int, float] = {}
    for step, discord in zip(edges["step"], edges["discord"], strict=True):
        by_step[step] = by_step.get(step, 0.0) + discord
    for step, energy in zip(convergence["step"], convergence["energy"], strict=True):
        assert 0.5 * by_step[step] == pytest.approx(energy, rel=1e-10)

    vertices = tables["vertices"].to_pydict()
    assert sorted(vertices["vertex"]) == sorted(net.vertices)
    stats = result.vertex_stats
    for i, vertex in enumerate(vertices["vertex"]):
        assert vertices["steps"][i] == stats[vertex]["steps"]
        assert vertices["messages_sent"][i] == stats[vertex]["messages_sent"]
    assert sum(vertices["messages_sent"]) == sum(vertices["messages_received"])


def test_soft_pins_are_pin_edges(tmp_path, small):
    net, x = small
    pin = ss.SoftPin("a1", [0], 0.5, gamma=2.0)
    result = diffuse_on_actors(
        net, x, dt=0.1, tol=1e-3, soft_pins=[pin], record_dir=tmp_path
    )
    edges = read_table(tmp_path / "edges.parquet").to_pydict()
    rows = [i for i, edge in enumerate(edges["edge"]) if edge == "pin:a1"]
    assert rows
    assert {edges["edge_type"][i] for i in rows} == {"pin"}
    final = read_table(tmp_path / "convergence.parquet").to_pydict()
    # With a pin the forward pass is not the exact solution, so no error.
    assert final["error_vs_exact"][-1] is None
    assert result.error_vs_exact is None
    assert final["energy"][-1] == pytest.approx(result.final_energy)


def test_async_run_records_rounds(tmp_path, small):
    net, x = small
    result = diffuse_on_actors(
        net,
        x,
        dt=0.1,
        tol=1e-4,
        schedule="async",
        staleness_bound=2,
        report_every=5,
        record_dir=tmp_path,
    )
    assert result.converged
    tables = read_all(tmp_path)
    convergence = tables["convergence"].to_pydict()
    assert len(convergence["step"]) >= 2
    assert convergence["error_vs_exact"][-1] < 1.0
    vertices = tables["vertices"].to_pydict()
    assert max(vertices["max_staleness"]) <= 3
    assert len(vertices["vertex"]) == len(net.vertices)


def test_killed_vertex_leaves_readable_tables(tmp_path, small):
    net, x = small
    with pytest.raises(RuntimeFailure, match="vertex actor 'a2'") as caught:
        diffuse_on_actors(
            net,
            x,
            dt=0.1,
            tol=1e-12,
            report_every=5,
            inject_fault=("a2", 40),
            record_dir=tmp_path,
        )
    assert caught.value.reports
    tables = read_all(tmp_path)
    steps = tables["convergence"].column("step").to_pylist()
    assert steps and max(steps) <= 40
    assert tables["edges"].num_rows == len(steps) * len(net.edges)
    # Counters of the vertices that reported before the failure.
    assert "z1" in tables["vertices"].column("vertex").to_pylist()


def test_existing_tables_refused_before_start(tmp_path, small):
    net, x = small
    diffuse_on_actors(net, x, dt=0.1, tol=1e-2, record_dir=tmp_path)
    with pytest.raises(InvalidValueError, match="already contains the tables"):
        diffuse_on_actors(net, x, dt=0.1, tol=1e-2, record_dir=tmp_path)
    again = diffuse_on_actors(
        net, x, dt=0.1, tol=1e-2, record_dir=tmp_path, overwrite=True
    )
    ids = read_table(tmp_path / "convergence.parquet").column("run_id").unique()
    assert ids.to_pylist() == [again.run_id]


def test_record_argument_errors(tmp_path, small):
    net, x = small
    with pytest.raises(InvalidValueError, match="run_id='a' needs record_dir"):
        diffuse_on_actors(net, x, run_id="a")
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(InvalidValueError, match="is not a directory"):
        diffuse_on_actors(net, x, record_dir=target)
    with pytest.raises(InvalidValueError, match="flush_seconds"):
        diffuse_on_actors(net, x, record_dir=tmp_path / "r", flush_seconds=0)


def test_tables_readable_while_running(tmp_path, small):
    net, x = small
    outcome = {}

    def run():
        try:
            diffuse_on_actors(
                net,
                x,
                dt=0.01,
                tol=1e-14,
                max_steps=10**7,
                report_every=5,
                record_dir=tmp_path,
                run_id="midrun",
                flush_seconds=0.2,
                timeout_s=120,
            )
        except Exception as error:  # reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    try:
        counts = []
        deadline = time.monotonic() + 90
        while len(counts) < 3 and time.monotonic() < deadline and thread.is_alive():
            rows = read_table_rows(tmp_path / "convergence.parquet")
            if rows and (not counts or rows > counts[-1]):
                counts.append(rows)
            time.sleep(0.3)
    finally:
        # Killing a vertex ends the run at once.
        ray.kill(ray.get_actor("sheafsim-midrun-z2"), no_restart=True)
        thread.join()
    assert len(counts) == 3, f"rows seen during the run: {counts}, {outcome}"
    assert isinstance(outcome["error"], RuntimeFailure)
    assert "vertex actor 'z2'" in str(outcome["error"])
    # The failed run compacted what it had.
    assert (tmp_path / "convergence.parquet").is_file()
    assert read_table(tmp_path / "convergence.parquet").num_rows >= counts[-1]


def test_experiment_with_killed_actor_ends_failed(tmp_path):
    """A vertex actor killed from outside ends the run with status failed."""
    from sheafsim.config import load_config
    from sheafsim.experiment import run_experiment

    config_path = tmp_path / "long.toml"
    config_path.write_text(
        "[network]\nsource = 'random'\nwidths = [3, 8, 8, 1]\n"
        "[data]\ndataset = 'random'\nsamples = 16\n"
        "[diffusion]\ndt = 0.01\ntol = 1e-14\nmax_steps = 10000000\n"
        "[runtime]\nreport_every = 5\n"
    )
    directory = tmp_path / "run"
    outcome = {}

    def run():
        outcome["summary"] = run_experiment(load_config(config_path), directory)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if read_table_rows(directory / "convergence.parquet") >= 2:
                break
            time.sleep(0.2)
        run_id = json.loads((directory / "config.json").read_text())["run_id"]
        ray.kill(ray.get_actor(f"sheafsim-{run_id}-a1"), no_restart=True)
    finally:
        thread.join(timeout=60)
    summary = outcome["summary"]
    assert summary["status"] == "failed"
    assert "'a1'" in summary["message"]
    assert summary == json.loads((directory / "summary.json").read_text())
    assert summary["steps"] >= 10
    tables = read_all(directory)
    assert tables["convergence"].num_rows >= 2
    assert not (directory / "outputs.npy").exists()


def read_table_rows(path):
    try:
        return read_table(path).num_rows
    except InvalidValueError:  # not created yet
        return 0


def test_sigkilled_cli_run_leaves_readable_tables(tmp_path):
    """SIGKILL of the driver (and with it the embedded Ray) mid-run."""
    config_path = tmp_path / "long.toml"
    config_path.write_text(
        "[network]\nsource = 'random'\nwidths = [3, 8, 1]\n"
        "[data]\ndataset = 'random'\nsamples = 8\n"
        "[diffusion]\ndt = 0.01\ntol = 1e-14\nmax_steps = 10000000\n"
        "[runtime]\nreport_every = 5\nnum_cpus = 2\n"
    )
    directory = tmp_path / "run"
    # The child starts its own embedded Ray, not the session's one.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Ray's socket paths must stay under 108 bytes, so not below tmp_path.
    ray_dir = tempfile.mkdtemp(prefix="sk")
    env["RAY_TMPDIR"] = ray_dir
    log = (tmp_path / "stderr.txt").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "sheafsim.cli", "run", str(config_path)]
        + ["--output", str(directory), "--quiet"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            # One flush writes the tables one after the other, so wait until
            # both tables have rows before the kill.
            if (
                read_table_rows(directory / "convergence.parquet") >= 3
                and read_table_rows(directory / "edges.parquet") > 0
            ):
                break
            time.sleep(0.3)
        ended = process.poll() is not None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert not ended, (tmp_path / "stderr.txt").read_text()[-2000:]
    rows = read_table(directory / "convergence.parquet")
    assert rows.num_rows >= 3
    assert rows.schema.equals(SCHEMAS["convergence"])
    # Each step's edge rows are appended and flushed together.
    edge_rows = read_table(directory / "edges.parquet").num_rows
    assert edge_rows > 0
    assert edge_rows % 3 == 0
    assert not (directory / "summary.json").exists()
