"""Training on vertex actors against in-process training (real Ray)."""

import numpy as np
import pytest

import sheafsim as ss
from sheafsim.errors import InvalidValueError
from sheafsim.recording import SCHEMAS, read_table
from sheafsim.runtime import DelayModel, train_on_actors

pytestmark = pytest.mark.usefixtures("local_ray")


def problem(output):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40))
    if output == "identity":
        return [2, 6, 5, 1], x, (x**2).sum(axis=0, keepdims=True)
    if output == "sigmoid":
        return [2, 6, 1], x, (x[:1] > 0).astype(float)
    return [2, 6, 3], x, rng.integers(0, 3, size=40)


@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_sync_actor_training_equals_in_process(output, tmp_path):
    widths, x, y = problem(output)
    net = ss.NeuralSheaf.random(widths, seed=1, output=output)
    common = {"epochs": 3, "steps_per_epoch": 20, "x_test": x, "y_test": y}
    expected = ss.train(
        net, x, y, reset_each_epoch=False, init="random", return_state=True, **common
    )
    result = train_on_actors(net, x, y, record_dir=tmp_path, **common)
    assert result.completed
    assert result.steps == 60
    for actual, wanted in zip(result.net.weights, expected.net.weights, strict=True):
        assert np.max(np.abs(actual - wanted)) <= 1e-10 * np.max(np.abs(wanted))
    for actual, wanted in zip(result.net.biases, expected.net.biases, strict=True):
        assert np.max(np.abs(actual - wanted)) <= 1e-10 * (1 + np.max(np.abs(wanted)))
    for vertex, stalk in expected.state.items():
        assert np.max(np.abs(result.state[vertex] - stalk)) <= 1e-10
    for key in ("epoch", "step", "train_accuracy"):
        assert result.history[key] == expected.history[key]
    assert result.history["train_loss"] == pytest.approx(
        expected.history["train_loss"], rel=1e-10
    )
    table = read_table(tmp_path / "training.parquet")
    assert table.schema.equals(SCHEMAS["training"])
    assert table.column("epoch").to_pylist() == [0, 1, 2, 3]
    assert table.column("train_loss").to_pylist() == result.history["train_loss"]
    assert result.table_rows["training"] == 4
    # The input vertex learns W1 and b1, so it takes every step.
    assert result.vertex_stats["x"]["steps"] == 60


def test_input_network_is_not_modified():
    widths, x, y = problem("identity")
    net = ss.NeuralSheaf.random(widths, seed=1)
    before = net.weights[0].copy()
    train_on_actors(net, x, y, epochs=1, steps_per_epoch=5)
    assert np.array_equal(net.weights[0], before)


def test_async_training_with_delays_lowers_loss():
    widths, x, y = problem("identity")
    net = ss.NeuralSheaf.random(widths, seed=1)
    result = train_on_actors(
        net,
        x,
        y,
        epochs=4,
        steps_per_epoch=50,
        schedule="async",
        staleness_bound=2,
        delays=DelayModel(compute_s=0.0005, jitter=0.5, seed=3),
    )
    assert result.completed
    losses = result.history["train_loss"]
    assert losses[-1] < losses[0]
    assert max(s["max_staleness"] for s in result.vertex_stats.values()) <= 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"report_every": 7}, r"report_every=7 does not divide steps_per_epoch=20"),
        ({"beta": -1.0}, r"beta=-1.0"),
        ({"schedule": "gossip"}, r"unknown schedule 'gossip'"),
        ({"run_id": "abc"}, r"run_id='abc' needs record_dir"),
        ({"x_test": np.zeros((2, 3))}, r"give both x_test and y_test"),
        (
            {"delays": DelayModel(compute_s=0.1, slowdown={"q": 2.0})},
            r"delays.slowdown names unknown vertices \['q'\]",
        ),
    ],
)
def test_argument_errors(kwargs, match):
    widths, x, y = problem("identity")
    net = ss.NeuralSheaf.random(widths, seed=1)
    with pytest.raises(InvalidValueError, match=match):
        train_on_actors(net, x, y, epochs=1, steps_per_epoch=20, **kwargs)


def test_labels_out_of_range():
    widths, x, _ = problem("softmax")
    net = ss.NeuralSheaf.random(widths, seed=1, output="softmax")
    with pytest.raises(InvalidValueError, match="out of range"):
        train_on_actors(net, x, np.full(40, 5), epochs=1, steps_per_epoch=5)


def test_diverging_training_ends_diverged():
    widths, x, y = problem("identity")
    net = ss.NeuralSheaf.random(widths, seed=1)
    result = train_on_actors(
        net, x, y, epochs=3, steps_per_epoch=50, dt=10.0, timeout_s=120
    )
    assert result.status == "diverged"
    assert "lower dt (now 10.0)" in result.message
    assert "beta*n_train" in result.message
    # The returned weights are the last finite ones, here the initial ones.
    assert all(np.all(np.isfinite(w)) for w in result.net.weights)
    assert result.history["epoch"][0] == 0
