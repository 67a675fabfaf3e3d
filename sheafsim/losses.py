"""Losses, accuracy and label checks for training neural sheaves.

Every array has one sample per column: predictions and targets have shape
``(n_out, n_samples)``. Each output nonlinearity has its loss: mean squared
error for the identity, binary cross-entropy for the sigmoid and categorical
cross-entropy for the softmax. With these pairs the gradient of the loss with
respect to the pre-activation ``z`` of the output layer is
``2 (z - y) / y.size`` (identity) or ``(phi(z) - y) / n_samples``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sheafsim.errors import InvalidValueError, ShapeError
from sheafsim.neural import OUTPUTS

__all__ = [
    "mse",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "loss_for_output",
    "accuracy",
    "prepare_labels",
    "PROBABILITY_FLOOR",
]

PROBABILITY_FLOOR = 1e-12
"""Smallest probability passed to ``log`` by the cross-entropy losses."""

_SUM_TOLERANCE = 1e-6

LossFunction = Callable[[Any, Any], float]


def _as_pair(pred: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 arrays of equal shape, a 1-D pair as one output row."""
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape:
        raise ShapeError(
            f"predictions of shape {pred.shape} and targets of shape {y.shape} "
            "differ; pass both as (n_out, n_samples), for example through "
            "prepare_labels"
        )
    if pred.ndim == 1:
        pred, y = pred.reshape(1, -1), y.reshape(1, -1)
    if pred.ndim != 2 or pred.shape[1] == 0:
        raise ShapeError(
            f"predictions have shape {pred.shape}; pass a 2-D array "
            "(n_out, n_samples) with at least one sample"
        )
    return pred, y


def mse(pred: Any, y: Any) -> float:
    """Return the mean squared error over all entries, ``np.mean((pred - y)**2)``.

    The mean runs over outputs and samples together, so with ``n_out`` outputs
    the value is the per-sample sum of squares divided by ``n_out``.
    """
    pred, y = _as_pair(pred, y)
    return float(np.mean((pred - y) ** 2))


def binary_cross_entropy(p: Any, y: Any) -> float:
    """Return the binary cross-entropy of probabilities ``p`` against labels ``y``.

    The value is ``-(y log p + (1 - y) log(1 - p))`` summed over the output rows
    and averaged over the samples (columns). ``p`` is clipped to
    ``[1e-12, 1 - 1e-12]`` first, so the loss stays finite at saturated outputs.
    """
    p, y = _as_pair(p, y)
    p = np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    per_entry = y * np.log(p) + (1.0 - y) * np.log1p(-p)
    return float(-np.sum(per_entry) / p.shape[1])


def categorical_cross_entropy(p: Any, y: Any) -> float:
    """Return the mean over samples of ``-sum_k y_k log p_k``.

    ``p`` contains class probabilities and ``y`` one-hot or probability targets,
    both of shape ``(n_classes, n_samples)``. ``p`` is clipped below at 1e-12.
    """
    p, y = _as_pair(p, y)
    log_p = np.log(np.maximum(p, PROBABILITY_FLOOR))
    return float(-np.sum(y * log_p) / p.shape[1])


_LOSSES: dict[str, LossFunction] = {
    "identity": mse,
    "sigmoid": binary_cross_entropy,
    "softmax": categorical_cross_entropy,
}


def _check_output(output: Any) -> str:
    if output not in OUTPUTS:
        raise InvalidValueError(
            f"unknown output activation {output!r}; use one of {list(OUTPUTS)}"
        )
    return str(output)


def loss_for_output(output: str) -> LossFunction:
    """Return the loss paired with an output nonlinearity.

    ``"identity"`` gives :func:`mse`, ``"sigmoid"`` gives
    :func:`binary_cross_entropy` and ``"softmax"`` gives
    :func:`categorical_cross_entropy`.
    """
    return _LOSSES[_check_output(output)]


def accuracy(pred: Any, y: Any) -> float:
    """Return the fraction of samples whose predicted class matches the label.

    With one output row the prediction is binary: class 1 where ``pred >= 0.5``,
    which for a sigmoid output means ``z >= 0``. The labels are 0/1 of shape
    ``(1, n)`` or ``(n,)``. With several output rows the predicted class is the
    row of the largest output, and ``y`` is either one-hot (or any scores) of
    the same shape, compared by argmax, or integer class labels of shape
    ``(n,)``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim == 1:
        pred = pred.reshape(1, -1)
    if pred.ndim != 2 or pred.shape[1] == 0:
        raise ShapeError(
            f"predictions have shape {pred.shape}; pass a 2-D array "
            "(n_out, n_samples) with at least one sample"
        )
    n_out, n_samples = pred.shape
    y = np.asarray(y)
    if n_out == 1:
        y = y.reshape(1, -1) if y.ndim == 1 else y
        if y.shape != pred.shape:
            raise ShapeError(
                f"labels of shape {y.shape} do not match predictions of shape "
                f"{pred.shape}; pass 0/1 labels of shape (1, {n_samples}) or "
                f"({n_samples},)"
            )
        predicted = pred[0] >= 0.5
        truth = y[0] >= 0.5
        return float(np.mean(predicted == truth))
    if y.shape == pred.shape:
        truth = np.argmax(y, axis=0)
    elif y.shape == (n_samples,):
        truth = y
    else:
        raise ShapeError(
            f"labels of shape {y.shape} do not match predictions of shape "
            f"{pred.shape}; pass one-hot labels of shape {pred.shape} or class "
            f"labels of shape ({n_samples},)"
        )
    return float(np.mean(np.argmax(pred, axis=0) == truth))


def prepare_labels(
    y: Any, n_out: int, output: str, *, n_samples: int | None = None
) -> np.ndarray:
    """Check training targets against the output layer and return them as float64.

    Parameters
    ----------
    y : array_like
        Targets of shape ``(n_out, n)``, or ``(n,)`` when ``n_out == 1``. For a
        softmax output also integer class labels of shape ``(n,)``, which are
        turned into one-hot columns. Whole-number floats count as class labels.
    n_out : int
        Width of the output layer.
    output : {"identity", "sigmoid", "softmax"}
        Output nonlinearity. Sigmoid targets must lie in [0, 1]. Softmax targets
        must be non-negative with every column summing to 1, the condition under
        which the cross-entropy gradient is ``(p - y) / n``.
    n_samples : int, optional
        Required number of samples (columns), usually the number of inputs.

    Returns
    -------
    ndarray, shape (n_out, n)
        A new float64 array.

    Raises
    ------
    InvalidValueError
        A shape that does not fit the output layer, a class label out of
        range, or a target value that is not finite or outside its range.
    """
    output = _check_output(output)
    if isinstance(n_out, bool) or not isinstance(n_out, int | np.integer) or n_out < 1:
        raise InvalidValueError(f"n_out={n_out!r} is invalid; use an integer >= 1")
    n_out = int(n_out)
    if output == "softmax" and n_out < 2:
        raise InvalidValueError(
            "a softmax output needs n_out >= 2; use output='sigmoid' for one unit"
        )
    array = np.asarray(y)
    if array.dtype.kind not in "biuf":
        raise InvalidValueError(
            f"labels of dtype {array.dtype} are not real numbers; pass a float or "
            "integer array"
        )
    if output == "softmax" and array.ndim == 1:
        targets = _one_hot_labels(array, n_out)
    elif n_out == 1 and array.ndim == 1:
        targets = array.astype(np.float64).reshape(1, -1)
    elif array.ndim == 2 and array.shape[0] == n_out:
        targets = array.astype(np.float64, copy=True)
    else:
        raise InvalidValueError(_shape_message(array.shape, n_out, output))
    if targets.shape[1] == 0:
        raise InvalidValueError("labels contain no samples; pass at least one")
    if n_samples is not None and targets.shape[1] != n_samples:
        raise InvalidValueError(
            f"labels have {targets.shape[1]} samples but the inputs have "
            f"{n_samples}; pass one label column per input column"
        )
    if not np.all(np.isfinite(targets)):
        raise InvalidValueError(
            "labels contain NaN or infinite values; clean or drop those samples"
        )
    if output == "sigmoid":
        _check_binary_range(targets)
    elif output == "softmax":
        _check_distributions(targets)
    return targets


def _shape_message(shape: tuple[int, ...], n_out: int, output: str) -> str:
    accepted = [f"({n_out}, n_samples)"]
    if n_out == 1:
        accepted.append("(n_samples,)")
    if output == "softmax":
        accepted.append("integer class labels of shape (n_samples,)")
    message = (
        f"labels of shape {shape} do not fit the {output} output layer with "
        f"{n_out} unit(s); pass {' or '.join(accepted)}"
    )
    if len(shape) == 2 and shape[1] == n_out:
        message += "; samples are columns, so pass y.T"
    return message


def _one_hot_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise InvalidValueError(
                "class labels contain NaN or infinite values; pass integers"
            )
        whole = labels == np.round(labels)
        if not np.all(whole):
            index = int(np.argmin(whole))
            raise InvalidValueError(
                f"class label {float(labels[index]):g} at index {index} is not a whole "
                f"number; pass integer labels 0 to {n_classes - 1} or one-hot "
                f"targets of shape ({n_classes}, n_samples)"
            )
    labels = labels.astype(np.int64)
    invalid = (labels < 0) | (labels >= n_classes)
    if np.any(invalid):
        index = int(np.argmax(invalid))
        raise InvalidValueError(
            f"class label {int(labels[index])} at index {index} is out of range; "
            f"valid labels for {n_classes} output units are 0 to {n_classes - 1}"
        )
    targets = np.zeros((n_classes, labels.size))
    targets[labels, np.arange(labels.size)] = 1.0
    return targets


def _first_position(mask: np.ndarray) -> tuple[int, int]:
    """Return the (row, column) of the first true entry of a 2-D mask."""
    row, column = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(row), int(column)


def _check_binary_range(targets: np.ndarray) -> None:
    outside = (targets < 0.0) | (targets > 1.0)
    if np.any(outside):
        row, column = _first_position(outside)
        raise InvalidValueError(
            f"sigmoid target {float(targets[row, column]):g} at row {row}, sample "
            f"{column} is outside [0, 1]; binary labels must be 0 or 1 (or "
            "probabilities)"
        )


def _check_distributions(targets: np.ndarray) -> None:
    negative = targets < 0.0
    if np.any(negative):
        row, column = _first_position(negative)
        raise InvalidValueError(
            f"softmax target {float(targets[row, column]):g} at row {row}, sample "
            f"{column} is negative; pass one-hot columns or integer class labels"
        )
    sums = targets.sum(axis=0)
    wrong = np.abs(sums - 1.0) > _SUM_TOLERANCE
    if np.any(wrong):
        column = int(np.argmax(wrong))
        raise InvalidValueError(
            f"softmax targets of sample {column} sum to {float(sums[column]):.6g}, "
            "not 1; pass one-hot columns or integer class labels"
        )
