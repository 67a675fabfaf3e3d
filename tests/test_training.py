"""Training by the joint sheaf dynamics, against the authors' reference runs."""

import numpy as np
import pytest
import reference_cases as rc

import sheafsim as ss
from sheafsim.training import HISTORY_KEYS, train

TRAINING_CASES = rc.names("training")


def relative(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    return float(np.max(np.abs(np.asarray(actual) - expected))) / scale


@pytest.mark.parametrize("name", TRAINING_CASES)
def test_reference_training_case(name):
    case = rc.load(name)
    settings = case["settings"]
    result = train(
        rc.network(case),
        np.array(case["x"]),
        np.array(case["y"]),
        alpha=settings["alpha"],
        beta=settings["beta"],
        dt=settings["dt"],
        epochs=1,
        steps_per_epoch=settings["steps"],
        init=rc.initial_state(case),
        return_state=True,
    )
    expected = case["expected"]
    assert result.completed
    assert result.steps == settings["steps"]
    for layer, (w, b) in enumerate(
        zip(expected["weights"], expected["biases"], strict=True)
    ):
        assert relative(result.net.weights[layer], w) < 1e-9
        assert relative(result.net.biases[layer].ravel(), b) < 1e-9
    for i, z in enumerate(expected["state"]["z"], start=1):
        assert relative(result.state[f"z{i}"], z) < 1e-9
    for i, a in enumerate(expected["state"]["a"], start=1):
        assert relative(result.state[f"a{i}"], a) < 1e-9
    assert result.history["train_loss"][-1] == pytest.approx(
        expected["forward_loss"], rel=1e-9
    )


@pytest.fixture
def regression():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(2, 60))
    y = (x**2).sum(axis=0, keepdims=True) - 2 / 3
    return ss.NeuralSheaf.random([2, 8, 1], seed=0), x, y


def test_history_rows_and_input_net_unchanged(regression):
    net, x, y = regression
    before = [w.copy() for w in net.weights]
    result = train(net, x, y, epochs=3, steps_per_epoch=50, log_every=20)
    # Epoch 0, then steps 20 and 40 inside each epoch and its end.
    assert result.history["epoch"] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert result.history["step"] == [0, 20, 40, 50, 70, 90, 100, 120, 140, 150]
    assert set(result.history) == set(HISTORY_KEYS)
    assert result.history["train_accuracy"] == [None] * 10
    assert result.history["test_loss"] == [None] * 10
    for old, w in zip(before, net.weights, strict=True):
        assert np.array_equal(old, w)
    assert not np.array_equal(result.net.weights[0], before[0])
    assert result.state is None
    assert len(result.energy) == 10


def test_training_lowers_loss_and_energy(regression):
    net, x, y = regression
    result = train(net, x, y, epochs=5, steps_per_epoch=400, x_test=x, y_test=y)
    losses = result.history["train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history["test_loss"] == pytest.approx(losses)


def test_default_rates_follow_the_recipe(regression):
    net, x, y = regression
    explicit = train(net, x, y, beta=1 / 60, dt=0.005, epochs=1, steps_per_epoch=30)
    default = train(net, x, y, epochs=1, steps_per_epoch=30)
    assert np.array_equal(explicit.net.weights[0], default.net.weights[0])
    assert ss.training.default_dt(ss.NeuralSheaf.random([2, 4, 4, 1])) == 0.01


def test_softmax_class_labels_equal_one_hot():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 40))
    labels = rng.integers(0, 3, size=40)
    net = ss.NeuralSheaf.random([3, 6, 3], seed=1, output="softmax")
    by_class = train(net, x, labels, epochs=2, steps_per_epoch=20)
    one_hot = train(net, x, np.eye(3)[:, labels], epochs=2, steps_per_epoch=20)
    assert np.array_equal(by_class.net.weights[1], one_hot.net.weights[1])
    assert by_class.history["train_accuracy"][-1] is not None


def test_classification_resets_to_forward_pass_each_epoch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 30))
    y = (x[0] > 0).astype(float)
    net = ss.NeuralSheaf.random([2, 5, 1], seed=2, output="sigmoid")
    result = train(net, x, y, epochs=2, steps_per_epoch=10, return_state=True)
    # Epoch 2 starts from the forward pass of the weights after epoch 1; replay it.
    first = train(net, x, y, epochs=1, steps_per_epoch=10)
    second = train(
        first.net,
        x,
        y,
        epochs=1,
        steps_per_epoch=10,
        init="forward_pass",
        return_state=True,
    )
    assert np.allclose(result.net.weights[0], second.net.weights[0], rtol=1e-14)
    assert np.allclose(result.state["z1"], second.state["z1"], rtol=1e-14)


def test_hard_pin_keeps_coordinates(regression):
    net, x, y = regression
    pin = ss.HardPin("a1", [0], 0.0)
    result = train(
        net, x, y, epochs=1, steps_per_epoch=50, pins=[pin], return_state=True
    )
    assert np.all(result.state["a1"][0] == 0.0)


def test_soft_pin_pulls_towards_target(regression):
    net, x, y = regression
    free = train(net, x, y, epochs=1, steps_per_epoch=200, return_state=True)
    pinned = train(
        net,
        x,
        y,
        epochs=1,
        steps_per_epoch=200,
        soft_pins=[ss.SoftPin("z1", None, 0.0, gamma=5.0)],
        return_state=True,
    )
    assert np.abs(pinned.state["z1"]).mean() < np.abs(free.state["z1"]).mean()


def test_divergence_reports_step_and_hint(regression):
    net, x, y = regression
    result = train(net, x, y, beta=50.0, dt=0.5, epochs=3, steps_per_epoch=200)
    assert result.status == "diverged"
    assert "lower beta*n_train (now 3000)" in result.message
    assert "at step" in result.message
    # The records up to the divergence are kept, and the weights are finite.
    assert result.history["epoch"][0] == 0
    assert all(np.all(np.isfinite(w)) for w in result.net.weights)


def test_on_record_receives_rows(regression):
    net, x, y = regression
    rows = []
    train(net, x, y, epochs=2, steps_per_epoch=5, on_record=rows.append)
    assert [row["step"] for row in rows] == [0, 5, 10]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0.0}, r"beta=0.0"),
        ({"dt": -1.0}, r"dt=-1.0"),
        ({"alpha": float("nan")}, r"alpha=nan"),
        ({"epochs": 0}, r"epochs=0 is invalid"),
        ({"steps_per_epoch": 2.5}, r"steps_per_epoch=2.5 is invalid"),
        ({"log_every": -1}, r"log_every=-1 is invalid"),
        ({"x_test": np.zeros((2, 3))}, r"give both x_test and y_test"),
        ({"init": {"z1": np.zeros((8, 60))}}, r"missing vertices \['a1', 'z2'\]"),
    ],
)
def test_argument_errors(regression, kwargs, match):
    net, x, y = regression
    with pytest.raises(ss.SheafsimError, match=match):
        train(net, x, y, **({"epochs": 1, "steps_per_epoch": 1} | kwargs))


def test_label_errors():
    x = np.zeros((3, 4))
    softmax = ss.NeuralSheaf.random([3, 4, 3], output="softmax")
    with pytest.raises(ss.SheafsimError, match="out of range"):
        train(softmax, x, np.array([0, 1, 2, 3]), epochs=1, steps_per_epoch=1)
    regression = ss.NeuralSheaf.random([3, 4, 2])
    with pytest.raises(ss.SheafsimError, match=r"\(1, 4\)"):
        train(regression, x, np.zeros((1, 4)), epochs=1, steps_per_epoch=1)
    with pytest.raises(ss.SheafsimError, match="NeuralSheaf"):
        train("net", x, np.zeros((1, 4)))


def test_numpy_integer_counts_accepted(regression):
    net, x, y = regression
    result = train(
        net, x, y, epochs=np.int64(1), steps_per_epoch=10, log_every=np.int64(5)
    )
    assert result.history["step"] == [0, 5, 10]
