"""Crossing and staleness tables of actor runs (real Ray)."""

import numpy as np
import pytest

import sheafsim as ss
from sheafsim.errors import RuntimeFailure
from sheafsim.recording import SCHEMAS, read_table
from sheafsim.runtime import DelayModel, diffuse_on_actors, train_on_actors
from sheafsim.runtime.metrics import MetricsSink, RecordSettings

WIDTHS = [3, 8, 8, 2]
SEED = 3


@pytest.fixture(scope="module")
def problem():
    net = ss.NeuralSheaf.random(WIDTHS, seed=1)
    x = np.random.default_rng(1).normal(size=(3, 12))
    return net, x


def in_process_counts(crossings):
    """Aggregate rows (step, layer, neuron, sample) to {(step, layer): count}."""
    keys, counts = np.unique(crossings[:, :2], axis=0, return_counts=True)
    return {
        (int(step), int(layer)): int(count)
        for (step, layer), count in zip(keys, counts, strict=True)
    }


def table_counts(directory):
    table = read_table(directory / "crossings.parquet").to_pydict()
    counts = {}
    for step, layer, count in zip(
        table["step"], table["layer"], table["crossings"], strict=True
    ):
        assert (step, layer) not in counts
        counts[(step, layer)] = count
    return counts


def result_counts(result):
    return {(step, layer): count for step, layer, count in result.crossings.tolist()}


def staleness_by_vertex(directory):
    table = read_table(directory / "staleness.parquet").to_pydict()
    histograms: dict[str, dict[int, int]] = {}
    for vertex, staleness, steps in zip(
        table["vertex"], table["staleness"], table["steps"], strict=True
    ):
        histograms.setdefault(vertex, {})[staleness] = steps
    return histograms


def vertex_rows(directory):
    table = read_table(directory / "vertices.parquet").to_pydict()
    return {
        vertex: (steps, max_staleness)
        for vertex, steps, max_staleness in zip(
            table["vertex"], table["steps"], table["max_staleness"], strict=True
        )
    }


def check_staleness_against_vertices(directory):
    """Check that the staleness rows add up to the vertices table."""
    histograms = staleness_by_vertex(directory)
    vertices = vertex_rows(directory)
    assert histograms
    for vertex, histogram in histograms.items():
        steps, max_staleness = vertices[vertex]
        assert sum(histogram.values()) == steps
        assert max(histogram) == max_staleness
    return histograms


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize(
    ("integrator", "dt", "tol", "max_steps", "status"),
    [
        ("euler", 0.2, 1e-4, 100_000, "converged"),
        pytest.param(
            "nesterov", 0.1, 1e-6, 100_000, "converged", marks=pytest.mark.slow
        ),
        # The last row compares the mask of the final stalk, not of the next
        # look-ahead point. In this run both counts are nonzero and differ.
        ("nesterov", 0.05, 1e-8, 30, "max_steps"),
    ],
)
def test_sync_crossings_match_in_process(
    tmp_path, problem, integrator, dt, tol, max_steps, status
):
    net, x = problem
    settings = {
        "integrator": integrator,
        "dt": dt,
        "tol": tol,
        "max_steps": max_steps,
        "seed": SEED,
    }
    expected = ss.diffuse(net, x, **settings)
    result = diffuse_on_actors(net, x, record_dir=tmp_path, **settings)
    assert expected.status == status
    assert result.status == status
    assert result.steps == expected.steps

    expected_counts = in_process_counts(expected.crossings)
    assert expected_counts
    if status == "max_steps":
        # The case exercises the row of the stopping step.
        assert (expected.steps, 2) in expected_counts
    assert table_counts(tmp_path) == expected_counts
    assert result_counts(result) == expected_counts
    assert result.table_rows["crossings"] == len(expected_counts)
    table = read_table(tmp_path / "crossings.parquet")
    assert table.schema.equals(SCHEMAS["crossings"])
    assert set(table.column("run_id").to_pylist()) == {result.run_id}
    assert result.crossings.dtype == np.int64


@pytest.mark.usefixtures("local_ray")
def test_sync_crossings_with_unpinned_start(tmp_path, problem):
    net, x = problem
    # z1 is pinned in full, so its actor is static and its single mask change
    # at step 1 comes from the driver. z2 is pinned in part and steps.
    settings = {
        "dt": 0.2,
        "tol": 1e-4,
        "seed": SEED,
        "pins": [ss.HardPin("z1"), ss.HardPin("z2", [0, 1], 0.5)],
        "pin_initial_state": False,
    }
    expected = ss.diffuse(net, x, **settings)
    result = diffuse_on_actors(net, x, record_dir=tmp_path, **settings)
    assert result.steps == expected.steps

    expected_counts = in_process_counts(expected.crossings)
    assert (1, 1) in expected_counts
    assert not any(layer == 1 and step > 1 for step, layer in expected_counts)
    assert table_counts(tmp_path) == expected_counts
    assert result_counts(result) == expected_counts


@pytest.mark.usefixtures("local_ray")
def test_sync_staleness_is_zero(tmp_path, problem):
    net, x = problem
    result = diffuse_on_actors(
        net, x, dt=0.2, tol=1e-3, seed=SEED, report_every=5, record_dir=tmp_path
    )
    histograms = check_staleness_against_vertices(tmp_path)
    stepping = set(net.free_vertices)
    assert set(histograms) == stepping
    for histogram in histograms.values():
        # Vertices may run past the stopping step, and those steps count too.
        assert list(histogram) == [0]
        assert histogram[0] >= result.steps
    assert result.staleness_counts == histograms
    table = read_table(tmp_path / "staleness.parquet")
    assert table.schema.equals(SCHEMAS["staleness"])
    assert table.column("vertex").to_pylist() == sorted(stepping)


@pytest.mark.usefixtures("local_ray")
def test_async_diagnostics_respect_bound(tmp_path, problem):
    net, x = problem
    result = diffuse_on_actors(
        net,
        x,
        dt=0.2,
        tol=1e-4,
        seed=SEED,
        schedule="async",
        staleness_bound=2,
        report_every=5,
        delays=DelayModel(compute_s=0.001, slowdown={"a1": 3.0}, seed=0),
        record_dir=tmp_path,
    )
    assert result.converged

    counts = table_counts(tmp_path)
    assert counts
    assert all(count > 0 for count in counts.values())
    assert {layer for _, layer in counts} <= set(range(1, net.depth + 1))
    assert result_counts(result) == counts

    histograms = check_staleness_against_vertices(tmp_path)
    assert set(histograms) == set(net.free_vertices)
    assert max(max(h) for h in histograms.values()) <= 2
    assert result.staleness_counts == histograms
    for vertex, histogram in histograms.items():
        assert sum(histogram.values()) == result.vertex_stats[vertex]["steps"]


@pytest.mark.usefixtures("local_ray")
def test_failed_run_keeps_reported_diagnostics(tmp_path, problem):
    net, x = problem
    with pytest.raises(RuntimeFailure, match="injected fault"):
        diffuse_on_actors(
            net,
            x,
            dt=0.2,
            tol=1e-4,
            seed=SEED,
            report_every=10,
            inject_fault=("a1", 45),
            record_dir=tmp_path,
        )
    # The staleness rows come from the same reports as the vertex rows.
    check_staleness_against_vertices(tmp_path)
    counts = table_counts(tmp_path)
    assert counts
    # a1 fails after step 45, before its report of step 50, so no step past 40
    # is checked. The crossings of step t wait until step t + 1 is checked.
    assert max(step for step, _ in counts) <= 39


@pytest.mark.usefixtures("local_ray")
def test_training_writes_diagnostics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40))
    y = (x**2).sum(axis=0, keepdims=True)
    net = ss.NeuralSheaf.random([2, 6, 5, 1], seed=1)
    result = train_on_actors(
        net, x, y, epochs=2, steps_per_epoch=20, record_dir=tmp_path
    )
    assert result.completed
    histograms = check_staleness_against_vertices(tmp_path)
    # The input vertex learns W1 and b1, so it steps as well.
    assert histograms["x"] == {0: 40}
    assert result.staleness_counts == histograms
    counts = table_counts(tmp_path)
    assert {layer for _, layer in counts} <= {1, 2}
    assert result_counts(result) == counts
    assert result.table_rows["crossings"] == len(counts)


def test_sink_sorts_staleness_rows(tmp_path):
    sink = MetricsSink(RecordSettings(directory=str(tmp_path), run_id="r"))
    sink.staleness({"z1": {2: 3, 0: 5}, "a1": {0: 4}, "x": {}})
    sink.crossings([(4, 2, 7), (5, 1, 1)])
    rows = sink.close()
    assert rows["staleness"] == 3
    assert rows["crossings"] == 2
    staleness = read_table(tmp_path / "staleness.parquet").to_pydict()
    assert staleness["vertex"] == ["a1", "z1", "z1"]
    assert staleness["staleness"] == [0, 0, 2]
    assert staleness["steps"] == [4, 5, 3]
    crossings = read_table(tmp_path / "crossings.parquet").to_pydict()
    assert crossings["step"] == [4, 5]
    assert crossings["layer"] == [2, 1]
    assert crossings["crossings"] == [7, 1]
