"""Synthetic and small real data sets for training neural sheaves.

Bosca and Ghrist (arXiv:2603.14831) train neural sheaves on two regression
surfaces, two 2-D classification problems and the scikit-learn digits. This
module draws the same data:

* ``paraboloid``: ``f(x) = x1^2 + x2^2 - 2/3`` with ``x ~ U[-2, 2]^2``.
* ``saddle``: ``f(x) = x1^2 - x2^2 + 0.5 sin(2 x1)`` with ``x ~ U[0, 2]^2``.
* ``circular``: two rings, inner radius ``sqrt(U)`` and outer radius
  ``sqrt(1.5^2 + U (2.5^2 - 1.5^2))``, each with ``N(0, 0.1^2)`` radial noise.
* ``blobs``: four Gaussian classes in the plane.
* ``digits``: scikit-learn's 8x8 handwritten digits, pixels scaled to [0, 1].

Regression targets carry ``N(0, 0.02^2)`` noise. Every array is float64 and
every input matrix has one sample per column, as :meth:`NeuralSheaf.forward`
expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sheafsim.errors import InvalidValueError

__all__ = ["Dataset", "load_dataset", "DATASETS"]

DATASETS = ("paraboloid", "saddle", "circular", "blobs", "digits")
"""Names accepted by :func:`load_dataset`."""

REGRESSION_NOISE_SD = 0.02
"""Standard deviation of the Gaussian noise added to regression targets."""

RADIUS_NOISE_SD = 0.1
"""Standard deviation of the radial noise of the ``circular`` rings."""

BLOB_CENTRES = np.array([[-1.5, -1.5], [1.8, -1.0], [1.0, 2.0], [-2.0, 1.5]])
"""Means of the four ``blobs`` classes, one row per class."""

BLOB_COVARIANCES = np.array(
    [
        [[0.8, 0.3], [0.3, 0.4]],
        [[0.3, -0.2], [-0.2, 1.0]],
        [[1.2, 0.5], [0.5, 0.5]],
        [[0.5, 0.0], [0.0, 0.8]],
    ]
)
"""Covariance matrices of the four ``blobs`` classes, in class order."""

_OUTPUT_OF_TASK = {
    "regression": "identity",
    "binary": "sigmoid",
    "multiclass": "softmax",
}

# train_test_split passes the seed to numpy's legacy RandomState, which takes
# seeds below 2**32 only.
_MAX_SKLEARN_SEED = 2**32 - 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split with samples as columns.

    Attributes
    ----------
    name : str
        Name passed to :func:`load_dataset`.
    x_train, x_test : ndarray, shape (n_features, n)
        Inputs, one sample per column.
    y_train, y_test : ndarray, shape (n_out, n)
        Float64 targets: regression values, 0/1 labels of one row for a
        binary task, or one-hot columns for a multiclass task.
    task : str
        ``"regression"``, ``"binary"`` or ``"multiclass"``.
    n_classes : int or None
        Number of classes, or None for regression.
    labels_train, labels_test : ndarray of int64, shape (n,), or None
        Integer class of every sample, or None for regression.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int | None = None
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None

    @property
    def output(self) -> str:
        """Output nonlinearity that fits the task: identity, sigmoid or softmax."""
        return _OUTPUT_OF_TASK[self.task]


def load_dataset(
    name: str, *, seed: int = 42, n_train: int = 300, n_test: int = 100
) -> Dataset:
    """Draw the data set ``name`` and split it into training and test samples.

    Every synthetic set uses one generator ``np.random.default_rng(seed)``, so
    the same arguments give the same arrays. The draws happen in this order:

    * ``paraboloid``, ``saddle``: the training inputs as a ``(2, n_train)``
      array in row-major order (all ``x1``, then all ``x2``), then
      ``n_train`` target noise values, then the same two draws for the test
      samples. The training set therefore does not depend on ``n_test``.
    * ``circular``: ``n = n_train + n_test`` points, ``n - n // 2`` of class 0
      and ``n // 2`` of class 1 (200 each by default). For class 0 and then
      class 1: the uniforms of the radius, the radial noise, the angles in
      ``[0, 2 pi)``. Then one permutation of all ``n`` points, whose first
      ``n_train`` form the training set.
    * ``blobs``: ``n = n_train + n_test`` points split evenly over the four
      classes, the first ``n % 4`` classes getting one extra (100 each by
      default). For classes 0 to 3 in turn, ``multivariate_normal`` draws
      that class's points. Then one permutation and the same split as
      ``circular``.
    * ``digits``: all 1797 images of ``sklearn.datasets.load_digits``, pixel
      values divided by 16, split by ``train_test_split(test_size=0.25,
      random_state=seed, stratify=labels)`` into 1347 training and 450 test
      images. ``n_train`` and ``n_test`` are checked but otherwise ignored.

    Parameters
    ----------
    name : {"paraboloid", "saddle", "circular", "blobs", "digits"}
    seed : int
        Non-negative seed, below ``2**32`` for ``digits``.
    n_train, n_test : int
        Number of training and test samples, each at least 1.

    Returns
    -------
    Dataset

    Raises
    ------
    InvalidValueError
        Unknown name, or a count or seed out of range.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise InvalidValueError(
            f"unknown data set {name!r}; use one of {list(DATASETS)}"
        )
    seed = check_count("seed", seed, minimum=0)
    n_train = check_count("n_train", n_train, minimum=1)
    n_test = check_count("n_test", n_test, minimum=1)
    if name == "digits":
        return _digits(seed)
    rng = np.random.default_rng(seed)
    if name in ("paraboloid", "saddle"):
        return _regression(name, rng, n_train, n_test)
    if name == "circular":
        x, labels = _circular(rng, n_train + n_test)
    else:
        x, labels = _blobs(rng, n_train + n_test)
    order = rng.permutation(labels.size)
    x, labels = x[:, order], labels[order]
    n_classes = 2 if name == "circular" else len(BLOB_CENTRES)
    return _classification(name, x, labels, n_train, n_classes)


def check_count(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < minimum
    ):
        raise InvalidValueError(
            f"{name}={value!r} is invalid; use an integer >= {minimum}"
        )
    return int(value)


def _paraboloid(x: np.ndarray) -> np.ndarray:
    return x[0] ** 2 + x[1] ** 2 - 2.0 / 3.0


def _saddle(x: np.ndarray) -> np.ndarray:
    return x[0] ** 2 - x[1] ** 2 + 0.5 * np.sin(2.0 * x[0])


def _regression(
    name: str, rng: np.random.Generator, n_train: int, n_test: int
) -> Dataset:
    surface, low, high = {
        "paraboloid": (_paraboloid, -2.0, 2.0),
        "saddle": (_saddle, 0.0, 2.0),
    }[name]
    arrays = []
    for n in (n_train, n_test):
        x = rng.uniform(low, high, size=(2, n))
        noise = rng.normal(0.0, REGRESSION_NOISE_SD, size=n)
        arrays += [x, (surface(x) + noise).reshape(1, n)]
    x_train, y_train, x_test, y_test = arrays
    return Dataset(name, x_train, y_train, x_test, y_test, task="regression")


def _circular(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    counts = (n - n // 2, n // 2)
    # Squared radii uniform on [0, 1] and on [1.5^2, 2.5^2] spread the points
    # uniformly over the disc and the annulus.
    squared_radius_range = ((0.0, 1.0), (1.5**2, 2.5**2))
    points, labels = [], []
    for label, (count, (low, high)) in enumerate(
        zip(counts, squared_radius_range, strict=True)
    ):
        uniform = rng.uniform(size=count)
        radius = np.sqrt(low + uniform * (high - low))
        radius = radius + rng.normal(0.0, RADIUS_NOISE_SD, size=count)
        angle = rng.uniform(0.0, 2.0 * np.pi, size=count)
        points.append(np.stack([radius * np.cos(angle), radius * np.sin(angle)]))
        labels.append(np.full(count, label, dtype=np.int64))
    return np.concatenate(points, axis=1), np.concatenate(labels)


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    n_classes = len(BLOB_CENTRES)
    points, labels = [], []
    for label in range(n_classes):
        count = n // n_classes + (1 if label < n % n_classes else 0)
        sample = rng.multivariate_normal(
            BLOB_CENTRES[label], BLOB_COVARIANCES[label], size=count
        )
        points.append(sample.T)
        labels.append(np.full(count, label, dtype=np.int64))
    return np.concatenate(points, axis=1), np.concatenate(labels)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    targets = np.zeros((n_classes, labels.size))
    targets[labels, np.arange(labels.size)] = 1.0
    return targets


def _targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        return labels.astype(np.float64).reshape(1, -1)
    return _one_hot(labels, n_classes)


def _classification(
    name: str, x: np.ndarray, labels: np.ndarray, n_train: int, n_classes: int
) -> Dataset:
    labels_train, labels_test = labels[:n_train], labels[n_train:]
    return Dataset(
        name,
        x_train=np.ascontiguousarray(x[:, :n_train]),
        y_train=_targets(labels_train, n_classes),
        x_test=np.ascontiguousarray(x[:, n_train:]),
        y_test=_targets(labels_test, n_classes),
        task="binary" if n_classes == 2 else "multiclass",
        n_classes=n_classes,
        labels_train=labels_train.copy(),
        labels_test=labels_test.copy(),
    )


def _digits(seed: int) -> Dataset:
    if seed > _MAX_SKLEARN_SEED:
        raise InvalidValueError(
            f"seed={seed} is invalid for 'digits'; scikit-learn's "
            f"train_test_split takes seeds from 0 to {_MAX_SKLEARN_SEED}"
        )
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError:
        raise InvalidValueError(
            "the 'digits' data set needs scikit-learn; install it with "
            "pip install 'sheafsim[examples]'"
        ) from None
    digits = load_digits()
    pixels = np.asarray(digits.data, dtype=np.float64) / 16.0
    labels = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, labels_train, labels_test = train_test_split(
        pixels, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    n_classes = 10
    return Dataset(
        "digits",
        x_train=np.ascontiguousarray(x_train.T),
        y_train=_one_hot(labels_train, n_classes),
        x_test=np.ascontiguousarray(x_test.T),
        y_test=_one_hot(labels_test, n_classes),
        task="multiclass",
        n_classes=n_classes,
        labels_train=labels_train,
        labels_test=labels_test,
    )
