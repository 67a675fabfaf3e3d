import logging
import math

import numpy as np
import pytest

import sheafsim as ss
from sheafsim.baseline import GD_HISTORY_KEYS, train_gradient_descent
from sheafsim.datasets import load_dataset
from sheafsim.errors import InvalidValueError
from sheafsim.losses import loss_for_output


def _tiny_problem(output, n_out, seed=0):
    """Return a [3, 5, 4, n_out] network with non-zero biases, inputs and targets."""
    rng = np.random.default_rng(seed)
    widths = [3, 5, 4, n_out]
    weights = [
        rng.normal(size=(m, n)) for n, m in zip(widths[:-1], widths[1:], strict=True)
    ]
    biases = [rng.normal(size=(m, 1)) for m in widths[1:]]
    net = ss.NeuralSheaf(weights, biases, output=output)
    x = rng.normal(size=(3, 6))
    if output == "identity":
        y = rng.normal(size=(n_out, 6))
    elif output == "sigmoid":
        y = rng.integers(0, 2, size=(1, 6)).astype(float)
    else:
        y = np.eye(n_out)[:, rng.integers(0, n_out, size=6)]
    return net, x, y


def _loss_of(weights, biases, output, x, y):
    net = ss.NeuralSheaf(weights, biases, output=output)
    return loss_for_output(output)(net.forward(x).output, y)


def _central_differences(net, x, y, h=1e-6):
    """Return the finite-difference gradients of every weight and bias entry."""
    weights = [w.copy() for w in net.weights]
    biases = [b.copy() for b in net.biases]
    gradients = []
    for params in (weights, biases):
        for array in params:
            grad = np.zeros_like(array)
            for index in np.ndindex(array.shape):
                original = array[index]
                array[index] = original + h
                up = _loss_of(weights, biases, net.output, x, y)
                array[index] = original - h
                down = _loss_of(weights, biases, net.output, x, y)
                array[index] = original
                grad[index] = (up - down) / (2 * h)
            gradients.append(grad)
    return gradients


@pytest.mark.parametrize(
    ("output", "n_out"), [("identity", 2), ("sigmoid", 1), ("softmax", 3)]
)
def test_gradient_matches_finite_differences(output, n_out):
    net, x, y = _tiny_problem(output, n_out)
    forward = net.forward(x)
    for hidden in ("z1", "z2"):
        # Both sides of the ReLU occur, so the masks take part in the check.
        assert np.any(forward[hidden] < 0)
        assert np.any(forward[hidden] > 0)
    lr = 0.1
    result = train_gradient_descent(net, x, y, lr=lr, epochs=1)
    assert result.status == "completed"
    before = [*net.weights, *net.biases]
    after = [*result.net.weights, *result.net.biases]
    expected = _central_differences(net, x, y)
    for start, end, numeric in zip(before, after, expected, strict=True):
        analytic = (start - end) / lr
        error = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        assert error < 1e-6


def test_input_network_unchanged():
    net, x, y = _tiny_problem("softmax", 3)
    weights = [w.copy() for w in net.weights]
    biases = [b.copy() for b in net.biases]
    result = train_gradient_descent(net, x, y, lr=0.5, epochs=5)
    for original, current in zip(weights, net.weights, strict=True):
        np.testing.assert_array_equal(original, current)
    for original, current in zip(biases, net.biases, strict=True):
        np.testing.assert_array_equal(original, current)
    assert result.net is not net
    assert result.net.output == "softmax"
    assert not np.array_equal(result.net.weights[0], net.weights[0])


def test_paraboloid_training_lowers_mse():
    data = load_dataset("paraboloid")
    net = ss.NeuralSheaf.random([2, 30, 1], seed=0)
    result = train_gradient_descent(
        net,
        data.x_train,
        data.y_train,
        lr=0.005,
        epochs=2000,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    assert result.status == "completed"
    assert result.completed
    assert result.epochs == 2000
    history = result.history
    assert history["epoch"] == list(range(2001))
    assert history["step"] == history["epoch"]
    # From about 8.5 to about 0.09 on this seed.
    assert history["train_loss"][-1] < history["train_loss"][0] / 20
    assert history["test_loss"][-1] < history["test_loss"][0] / 20
    assert history["train_accuracy"] == [None] * 2001
    assert history["test_accuracy"] == [None] * 2001
    assert result.wall_time_s > 0


def test_history_matches_forward_pass():
    data = load_dataset("blobs", n_train=60, n_test=20)
    net = ss.NeuralSheaf.random([2, 8, 4], seed=1, output="softmax")
    result = train_gradient_descent(
        net,
        data.x_train,
        data.labels_train,
        lr=0.05,
        epochs=20,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    assert set(result.history) == set(GD_HISTORY_KEYS)
    for key in GD_HISTORY_KEYS:
        assert len(result.history[key]) == 21
    loss = loss_for_output("softmax")
    initial = loss(net.forward(data.x_train).output, data.y_train)
    assert result.history["train_loss"][0] == pytest.approx(initial, rel=1e-12)
    prediction = result.net.forward(data.x_test).output
    assert result.history["test_loss"][-1] == pytest.approx(
        loss(prediction, data.y_test), rel=1e-12
    )
    expected_accuracy = np.mean(np.argmax(prediction, axis=0) == data.labels_test)
    assert result.history["test_accuracy"][-1] == pytest.approx(expected_accuracy)


def test_circular_classification_improves():
    data = load_dataset("circular")
    net = ss.NeuralSheaf.random([2, 30, 1], seed=0, output="sigmoid")
    result = train_gradient_descent(
        net,
        data.x_train,
        data.y_train,
        lr=0.01,
        epochs=500,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    history = result.history
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_accuracy"][-1] > 0.85
    assert history["test_accuracy"][-1] > 0.85


def test_without_test_data_records_none():
    net, x, y = _tiny_problem("sigmoid", 1)
    result = train_gradient_descent(net, x, y, lr=0.1, epochs=3)
    assert result.history["test_loss"] == [None] * 4
    assert result.history["test_accuracy"] == [None] * 4
    assert all(value is not None for value in result.history["train_accuracy"])


def test_progress_called_every_epoch():
    net, x, y = _tiny_problem("identity", 2)
    calls = []
    result = train_gradient_descent(
        net, x, y, lr=0.01, epochs=4, progress=lambda *args: calls.append(args)
    )
    assert [call[:2] for call in calls] == [(e, e) for e in range(5)]
    assert [call[2] for call in calls] == result.history["train_loss"]


def test_large_rate_diverges(caplog):
    data = load_dataset("paraboloid")
    net = ss.NeuralSheaf.random([2, 30, 1], seed=0)
    with caplog.at_level(logging.WARNING, logger="sheafsim.baseline"):
        result = train_gradient_descent(
            net, data.x_train, data.y_train, lr=10.0, epochs=100
        )
    assert result.status == "diverged"
    assert not result.completed
    failed = result.history["epoch"][-1]
    assert 1 <= failed < 100
    assert not math.isfinite(result.history["train_loss"][-1])
    assert all(math.isfinite(v) for v in result.history["train_loss"][:-1])
    assert result.epochs == failed - 1
    assert f"at epoch {failed}" in result.message
    assert "lower lr (now 10)" in result.message
    assert "gradient descent diverged" in caplog.text
    for array in [*result.net.weights, *result.net.biases]:
        assert np.all(np.isfinite(array))
    # The returned network is the last finite one: its loss is the one logged
    # for the epoch before the divergence.
    kept_loss = loss_for_output("identity")(
        result.net.forward(data.x_train).output, data.y_train
    )
    assert kept_loss == pytest.approx(result.history["train_loss"][-2], rel=1e-12)


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        (0.0, r"lr=0.0 is invalid; use a positive finite number"),
        (-0.1, r"lr=-0.1 is invalid"),
        (float("nan"), r"lr=nan is invalid"),
        (float("inf"), r"lr=inf is invalid"),
        (True, r"lr=True is invalid; use a positive number"),
        ("0.1", r"lr='0.1' is invalid"),
    ],
)
def test_invalid_rate_rejected(lr, message):
    net, x, y = _tiny_problem("identity", 2)
    with pytest.raises(InvalidValueError, match=message):
        train_gradient_descent(net, x, y, lr=lr, epochs=1)


@pytest.mark.parametrize(
    ("epochs", "message"),
    [
        (0, r"epochs=0 is invalid; use an integer >= 1"),
        (-3, r"epochs=-3 is invalid"),
        (2.0, r"epochs=2.0 is invalid"),
        (False, r"epochs=False is invalid"),
    ],
)
def test_invalid_epochs_rejected(epochs, message):
    net, x, y = _tiny_problem("identity", 2)
    with pytest.raises(InvalidValueError, match=message):
        train_gradient_descent(net, x, y, lr=0.1, epochs=epochs)


def test_test_data_needs_both_parts():
    net, x, y = _tiny_problem("identity", 2)
    with pytest.raises(InvalidValueError, match="give both x_test and y_test"):
        train_gradient_descent(net, x, y, lr=0.1, epochs=1, x_test=x)
    with pytest.raises(InvalidValueError, match="give both x_test and y_test"):
        train_gradient_descent(net, x, y, lr=0.1, epochs=1, y_test=y)


def test_labels_must_fit_network():
    net, x, y = _tiny_problem("identity", 2)
    with pytest.raises(
        InvalidValueError, match=r"labels have 5 samples but the inputs have 6"
    ):
        train_gradient_descent(net, x, y[:, :5], lr=0.1, epochs=1)
    with pytest.raises(InvalidValueError, match=r"shape \(6, 2\).*pass y\.T"):
        train_gradient_descent(net, x, y.T, lr=0.1, epochs=1)
    with pytest.raises(
        InvalidValueError, match=r"labels have 6 samples but the inputs have 2"
    ):
        train_gradient_descent(net, x, y, lr=0.1, epochs=1, x_test=x[:, :2], y_test=y)


def test_rejects_non_network():
    with pytest.raises(InvalidValueError, match="net must be a NeuralSheaf, got list"):
        train_gradient_descent([], np.zeros((2, 3)), np.zeros(3), lr=0.1, epochs=1)
