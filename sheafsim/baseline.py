"""Full-batch gradient descent with backpropagation, the baseline for sheaf training.

The baseline trains the same architecture from the same initial weights as
:func:`sheafsim.training.train`, with one gradient step on the whole training
set per epoch. The loss is the one paired with the output nonlinearity by
:func:`sheafsim.losses.loss_for_output`, and the ReLU derivative is
``1[z >= 0]``, the same mask as the activation maps of the neural sheaf.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheafsim.errors import InvalidValueError
from sheafsim.losses import accuracy, loss_for_output, prepare_labels
from sheafsim.neural import NeuralSheaf, apply_output

__all__ = ["GradientDescentResult", "train_gradient_descent", "GD_HISTORY_KEYS"]

logger = logging.getLogger(__name__)

GD_HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
)
"""Keys of :attr:`GradientDescentResult.history`, where ``step`` equals ``epoch``."""


@dataclass
class GradientDescentResult:
    """Outcome of :func:`train_gradient_descent`.

    Attributes
    ----------
    status : str
        ``"completed"`` after every epoch, or ``"diverged"`` when the training
        loss or a weight became NaN or infinite.
    net : NeuralSheaf
        The trained network (the input network is left unchanged). After a
        divergence: the weights of the last epoch with a finite loss.
    history : dict of str to list
        One entry per evaluation, keys :data:`GD_HISTORY_KEYS`: epoch 0 before
        training, then the end of every epoch, the diverging epoch included.
        Accuracies are None for regression, and test values None without test
        data.
    epochs : int
        Gradient steps whose result was kept.
    wall_time_s : float
        Seconds spent in forward passes on the training data, backpropagation
        and weight updates. Loss, accuracy and test evaluations are excluded.
    message : str
        Summary of the run, naming the epoch and the remedy after a divergence.
    """

    status: str
    net: NeuralSheaf
    history: dict[str, list]
    epochs: int
    wall_time_s: float
    message: str = ""

    @property
    def completed(self) -> bool:
        """Whether every epoch ran."""
        return self.status == "completed"


def _forward(
    weights: list[np.ndarray], biases: list[np.ndarray], output: str, x: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Return the layer inputs ``[x, a1, ..., ak]``, the ``z_l`` and the output."""
    inputs = [x]
    pre_activations = []
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
        z = w @ inputs[-1] + b
        pre_activations.append(z)
        if layer < len(weights):
            inputs.append(np.where(z >= 0, z, 0.0))
    out = apply_output(np, output, pre_activations[-1])
    return inputs, pre_activations, out


def _gradients(
    weights: list[np.ndarray],
    inputs: list[np.ndarray],
    pre_activations: list[np.ndarray],
    out: np.ndarray,
    y: np.ndarray,
    output: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Backpropagate the loss of ``output`` and return the weight and bias gradients."""
    if output == "identity":
        # d/dz of np.mean((z - y)**2), a mean over outputs and samples.
        delta = 2.0 * (out - y) / y.size
    else:
        # Sigmoid with binary and softmax with categorical cross-entropy, averaged
        # over the samples. The softmax case is exact when every target column
        # sums to 1.
        delta = (out - y) / y.shape[1]
    weight_grads: list[np.ndarray] = []
    bias_grads: list[np.ndarray] = []
    for layer in range(len(weights) - 1, -1, -1):
        weight_grads.append(delta @ inputs[layer].T)
        bias_grads.append(delta.sum(axis=1, keepdims=True))
        if layer > 0:
            delta = (weights[layer].T @ delta) * (pre_activations[layer - 1] >= 0)
    return weight_grads[::-1], bias_grads[::-1]


def _check_rate(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.number):
        raise InvalidValueError(f"lr={lr!r} is invalid; use a positive number")
    lr = float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise InvalidValueError(f"lr={lr} is invalid; use a positive finite number")
    return lr


def _check_epochs(epochs: Any) -> int:
    if (
        isinstance(epochs, bool)
        or not isinstance(epochs, int | np.integer)
        or epochs < 1
    ):
        raise InvalidValueError(f"epochs={epochs!r} is invalid; use an integer >= 1")
    return int(epochs)


def _check_data(
    net: Any, x: Any, y: Any, x_test: Any, y_test: Any
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Validate the network and data, and return ``x``, ``y`` and the test pair."""
    if not isinstance(net, NeuralSheaf):
        raise InvalidValueError(
            f"net must be a NeuralSheaf, got {type(net).__name__}; build one with "
            "NeuralSheaf.random or NeuralSheaf.from_sklearn"
        )
    if not isinstance(net.weights[0], np.ndarray):
        raise InvalidValueError(
            "gradient descent needs numpy weights; convert the network with "
            "net.to('numpy')"
        )
    n_out, output = net.widths[-1], net.output
    x = np.asarray(net.check_input(x), dtype=np.float64)
    y = prepare_labels(y, n_out, output, n_samples=x.shape[1])
    if (x_test is None) != (y_test is None):
        raise InvalidValueError(
            "give both x_test and y_test, or neither; one of them is missing"
        )
    if x_test is None:
        return x, y, None
    features = np.asarray(net.check_input(x_test), dtype=np.float64)
    labels = prepare_labels(y_test, n_out, output, n_samples=features.shape[1])
    return x, y, (features, labels)


def _evaluate(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    output: str,
    train_out: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[float, float | None, float | None, float | None]:
    """Return train loss, test loss, train accuracy and test accuracy.

    Accuracies are None for the identity output, and test values None without
    test data.
    """
    loss = loss_for_output(output)
    classification = output != "identity"
    train_loss = loss(train_out, y)
    train_accuracy = accuracy(train_out, y) if classification else None
    test_loss = test_accuracy = None
    if test is not None:
        test_out = _forward(weights, biases, output, test[0])[2]
        test_loss = loss(test_out, test[1])
        test_accuracy = accuracy(test_out, test[1]) if classification else None
    return train_loss, test_loss, train_accuracy, test_accuracy


def train_gradient_descent(
    net: NeuralSheaf,
    x: Any,
    y: Any,
    *,
    lr: float,
    epochs: int,
    x_test: Any = None,
    y_test: Any = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> GradientDescentResult:
    """Train a copy of ``net`` by full-batch gradient descent, one step per epoch.

    Each epoch backpropagates the loss of :func:`loss_for_output(net.output)
    <sheafsim.losses.loss_for_output>` over the whole training set and updates
    ``W_l -= lr * dL/dW_l`` and ``b_l -= lr * dL/db_l``. After every update the
    ordinary forward pass gives the logged losses and accuracies.

    Parameters
    ----------
    net : NeuralSheaf
        Initial network with numpy weights. It is copied, not modified.
    x : array_like, shape (n_0, n_train)
        Training inputs as columns.
    y : array_like
        Targets in any form :func:`sheafsim.losses.prepare_labels` accepts.
    lr : float
        Learning rate, positive.
    epochs : int
        Number of gradient steps, at least 1.
    x_test, y_test : array_like, optional
        Test data, evaluated after every epoch. Give both or neither.
    progress : callable, optional
        Called as ``progress(epoch, step, train_loss)`` after every evaluation,
        epoch 0 included, where ``step`` equals ``epoch``.

    Returns
    -------
    GradientDescentResult
        Status ``"diverged"`` when the training loss or a weight becomes NaN or
        infinite. The message then names the epoch and suggests a lower ``lr``.

    Raises
    ------
    InvalidValueError, ShapeError
        Invalid network, rate, epoch count, inputs or labels.
    """
    lr = _check_rate(lr)
    epochs = _check_epochs(epochs)
    x, y, test = _check_data(net, x, y, x_test, y_test)
    output = net.output
    weights = [np.array(w, dtype=np.float64) for w in net.weights]
    biases = [np.array(b, dtype=np.float64) for b in net.biases]
    history: dict[str, list] = {key: [] for key in GD_HISTORY_KEYS}

    def record(
        epoch: int,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        train_out: np.ndarray,
    ) -> float:
        """Append the history row of ``epoch`` and return its training loss."""
        scores = _evaluate(weights, biases, output, train_out, y, test)
        for key, value in zip(GD_HISTORY_KEYS, (epoch, epoch, *scores), strict=True):
            history[key].append(value)
        if progress is not None:
            progress(epoch, epoch, scores[0])
        return scores[0]

    epochs_kept = 0
    failed_at = None
    wall = 0.0
    # Overflow and NaN warnings are expected on the way to a divergence, which
    # the loop detects and reports as the status.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        start = time.perf_counter()
        inputs, pre_activations, out = _forward(weights, biases, output, x)
        wall += time.perf_counter() - start
        if not math.isfinite(record(0, weights, biases, out)):
            failed_at = 0
        while failed_at is None and epochs_kept < epochs:
            epoch = epochs_kept + 1
            start = time.perf_counter()
            weight_grads, bias_grads = _gradients(
                weights, inputs, pre_activations, out, y, output
            )
            new_weights = [
                w - lr * g for w, g in zip(weights, weight_grads, strict=True)
            ]
            new_biases = [b - lr * g for b, g in zip(biases, bias_grads, strict=True)]
            inputs, pre_activations, out = _forward(new_weights, new_biases, output, x)
            wall += time.perf_counter() - start
            # The row of a diverging epoch is recorded too, but its weights are
            # dropped and the previous ones returned.
            train_loss = record(epoch, new_weights, new_biases, out)
            finite_weights = all(
                math.isfinite(float(p.sum())) for p in (*new_weights, *new_biases)
            )
            if not (math.isfinite(train_loss) and finite_weights):
                failed_at = epoch
            else:
                weights, biases = new_weights, new_biases
                epochs_kept = epoch

    status, message = "completed", f"trained {epochs} epochs with lr={lr:.4g}"
    if failed_at is not None:
        status = "diverged"
        message = (
            f"the training loss or a weight became NaN or infinite at epoch "
            f"{failed_at}; lower lr (now {lr:.4g})"
        )
        logger.warning("gradient descent diverged: %s", message)
    trained = NeuralSheaf(weights, biases, output=output)  # type: ignore[arg-type]
    return GradientDescentResult(
        status=status,
        net=trained,
        history=history,
        epochs=epochs_kept,
        wall_time_s=wall,
        message=message,
    )
