import dataclasses

import numpy as np
import pytest

from sheafsim.datasets import (
    BLOB_CENTRES,
    BLOB_COVARIANCES,
    DATASETS,
    REGRESSION_NOISE_SD,
    load_dataset,
)
from sheafsim.errors import InvalidValueError

SYNTHETIC = ["paraboloid", "saddle", "circular", "blobs"]
N_OUTPUTS = {"paraboloid": 1, "saddle": 1, "circular": 1, "blobs": 4}
ARRAYS = ["x_train", "y_train", "x_test", "y_test"]


def _all_points(data, label):
    """Return every point of class ``label``, training and test together."""
    return np.concatenate(
        [
            data.x_train[:, data.labels_train == label],
            data.x_test[:, data.labels_test == label],
        ],
        axis=1,
    )


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_and_dtype(name):
    data = load_dataset(name)
    assert data.name == name
    assert data.x_train.shape == (2, 300)
    assert data.x_test.shape == (2, 100)
    assert data.y_train.shape == (N_OUTPUTS[name], 300)
    assert data.y_test.shape == (N_OUTPUTS[name], 100)
    for attribute in ARRAYS:
        assert getattr(data, attribute).dtype == np.float64


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_custom_sizes(name):
    data = load_dataset(name, n_train=37, n_test=11)
    assert data.x_train.shape == (2, 37)
    assert data.y_train.shape[1] == 37
    assert data.x_test.shape == (2, 11)
    assert data.y_test.shape[1] == 11


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_data(name):
    first = load_dataset(name, seed=7)
    second = load_dataset(name, seed=7)
    for attribute in ARRAYS:
        np.testing.assert_array_equal(
            getattr(first, attribute), getattr(second, attribute)
        )


@pytest.mark.parametrize("name", [*SYNTHETIC, "digits"])
def test_different_seed_different_data(name):
    first = load_dataset(name, seed=1)
    second = load_dataset(name, seed=2)
    assert not np.array_equal(first.x_train, second.x_train)
    assert not np.array_equal(first.x_test, second.x_test)


def test_default_seed_is_42():
    default = load_dataset("paraboloid")
    explicit = load_dataset("paraboloid", seed=42)
    np.testing.assert_array_equal(default.x_train, explicit.x_train)
    np.testing.assert_array_equal(default.y_test, explicit.y_test)


def test_regression_draw_order():
    rng = np.random.default_rng(42)
    x_train = rng.uniform(-2.0, 2.0, size=(2, 300))
    noise_train = rng.normal(0.0, 0.02, size=300)
    x_test = rng.uniform(-2.0, 2.0, size=(2, 100))
    data = load_dataset("paraboloid")
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    expected = x_train[0] ** 2 + x_train[1] ** 2 - 2.0 / 3.0 + noise_train
    np.testing.assert_allclose(data.y_train[0], expected, rtol=1e-14)


def test_regression_train_ignores_n_test():
    small = load_dataset("saddle", n_test=5)
    large = load_dataset("saddle", n_test=500)
    np.testing.assert_array_equal(small.x_train, large.x_train)
    np.testing.assert_array_equal(small.y_train, large.y_train)


@pytest.mark.parametrize(
    ("name", "low", "high", "surface"),
    [
        ("paraboloid", -2.0, 2.0, lambda x: x[0] ** 2 + x[1] ** 2 - 2.0 / 3.0),
        ("saddle", 0.0, 2.0, lambda x: x[0] ** 2 - x[1] ** 2 + 0.5 * np.sin(2 * x[0])),
    ],
)
def test_regression_inputs_and_targets(name, low, high, surface):
    data = load_dataset(name)
    assert data.task == "regression"
    assert data.output == "identity"
    assert data.n_classes is None
    assert data.labels_train is None
    assert data.labels_test is None
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.min() >= low
        assert x.max() <= high
        residual = y[0] - surface(x)
        assert np.max(np.abs(residual)) < 5 * REGRESSION_NOISE_SD
    residual = data.y_train[0] - surface(data.x_train)
    assert np.std(residual) == pytest.approx(REGRESSION_NOISE_SD, rel=0.2)
    assert abs(np.mean(residual)) < 4 * REGRESSION_NOISE_SD / np.sqrt(300)


def test_circular_classes_and_labels():
    data = load_dataset("circular")
    assert data.task == "binary"
    assert data.output == "sigmoid"
    assert data.n_classes == 2
    labels = np.concatenate([data.labels_train, data.labels_test])
    assert np.bincount(labels).tolist() == [200, 200]
    assert data.labels_train.dtype == np.int64
    np.testing.assert_array_equal(data.y_train[0], data.labels_train)
    np.testing.assert_array_equal(data.y_test[0], data.labels_test)
    # The shuffle mixes both classes into both parts.
    assert 100 < np.sum(data.labels_train == 1) < 200
    assert 0 < np.sum(data.labels_test == 1) < 100


def test_circular_radii():
    data = load_dataset("circular")
    inner = np.linalg.norm(_all_points(data, 0), axis=0)
    outer = np.linalg.norm(_all_points(data, 1), axis=0)
    # Radial noise has standard deviation 0.1, so 5 deviations is 0.5.
    assert inner.max() <= 1.0 + 0.5
    assert outer.min() >= 1.5 - 0.5
    assert outer.max() <= 2.5 + 0.5
    assert np.median(inner) < 1.0
    assert 1.5 < np.median(outer) < 2.5


def test_circular_odd_total_splits_classes():
    data = load_dataset("circular", n_train=3, n_test=2)
    labels = np.concatenate([data.labels_train, data.labels_test])
    assert np.bincount(labels, minlength=2).tolist() == [3, 2]


def test_blobs_balance_and_one_hot():
    data = load_dataset("blobs")
    assert data.task == "multiclass"
    assert data.output == "softmax"
    assert data.n_classes == 4
    labels = np.concatenate([data.labels_train, data.labels_test])
    assert np.bincount(labels).tolist() == [100, 100, 100, 100]
    for y, label in (
        (data.y_train, data.labels_train),
        (data.y_test, data.labels_test),
    ):
        assert set(np.unique(y)) == {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(axis=0), np.ones(y.shape[1]))
        np.testing.assert_array_equal(np.argmax(y, axis=0), label)


def test_blobs_uneven_total():
    data = load_dataset("blobs", n_train=5, n_test=2)
    labels = np.concatenate([data.labels_train, data.labels_test])
    assert np.bincount(labels, minlength=4).tolist() == [2, 2, 2, 1]


def test_blobs_match_centres_and_covariances():
    data = load_dataset("blobs")
    for label in range(4):
        points = _all_points(data, label)
        # 100 points: the mean is within about 3 standard errors, the
        # covariance entries within about 2.5.
        np.testing.assert_allclose(points.mean(axis=1), BLOB_CENTRES[label], atol=0.35)
        np.testing.assert_allclose(np.cov(points), BLOB_COVARIANCES[label], atol=0.35)


def test_digits_split_and_scaling():
    data = load_dataset("digits")
    assert data.x_train.shape == (64, 1347)
    assert data.x_test.shape == (64, 450)
    assert data.y_train.shape == (10, 1347)
    assert data.y_test.shape == (10, 450)
    assert data.task == "multiclass"
    assert data.n_classes == 10
    assert data.x_train.min() >= 0.0
    assert data.x_train.max() == 1.0
    np.testing.assert_array_equal(np.argmax(data.y_test, axis=0), data.labels_test)
    np.testing.assert_array_equal(data.y_train.sum(axis=0), np.ones(1347))


def test_digits_split_is_stratified():
    data = load_dataset("digits")
    train_counts = np.bincount(data.labels_train, minlength=10)
    test_counts = np.bincount(data.labels_test, minlength=10)
    expected = 0.25 * (train_counts + test_counts)
    assert np.all(np.abs(test_counts - expected) <= 1)


def test_digits_ignores_sample_counts():
    data = load_dataset("digits", n_train=5, n_test=5)
    assert data.x_train.shape == (64, 1347)
    assert data.x_test.shape == (64, 450)


def test_digits_matches_scikit_learn_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, x_test, _, _ = train_test_split(
        digits.data,
        digits.target,
        test_size=0.25,
        random_state=3,
        stratify=digits.target,
    )
    data = load_dataset("digits", seed=3)
    np.testing.assert_array_equal(data.x_test, x_test.T / 16.0)


def test_dataset_is_frozen():
    data = load_dataset("paraboloid", n_train=2, n_test=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.task = "binary"


def test_names_constant_lists_every_loader():
    assert set(DATASETS) == {*SYNTHETIC, "digits"}


def test_unknown_name_rejected():
    with pytest.raises(
        InvalidValueError, match=r"unknown data set 'moons'.*paraboloid"
    ):
        load_dataset("moons")
    with pytest.raises(InvalidValueError, match="unknown data set 3"):
        load_dataset(3)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("n_train", 0, r"n_train=0 is invalid; use an integer >= 1"),
        ("n_test", 0, r"n_test=0 is invalid; use an integer >= 1"),
        ("n_train", 2.5, r"n_train=2.5 is invalid"),
        ("n_test", True, r"n_test=True is invalid"),
        ("seed", -1, r"seed=-1 is invalid; use an integer >= 0"),
        ("seed", 1.0, r"seed=1.0 is invalid"),
    ],
)
def test_invalid_counts_rejected(keyword, value, message):
    with pytest.raises(InvalidValueError, match=message):
        load_dataset("blobs", **{keyword: value})


def test_digits_rejects_large_seed():
    with pytest.raises(
        InvalidValueError, match=r"seed=4294967296 is invalid for 'digits'"
    ):
        load_dataset("digits", seed=2**32)
