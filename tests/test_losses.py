import numpy as np
import pytest

from sheafsim.errors import InvalidValueError, ShapeError
from sheafsim.losses import (
    PROBABILITY_FLOOR,
    accuracy,
    binary_cross_entropy,
    categorical_cross_entropy,
    loss_for_output,
    mse,
    prepare_labels,
)


def test_mse_averages_all_entries():
    pred = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # Squared errors 0, 4, 9, 1, 1, 1 over 6 entries.
    assert mse(pred, y) == pytest.approx(16.0 / 6.0)
    assert mse(pred, y) == pytest.approx(np.mean((pred - y) ** 2))


def test_mse_accepts_one_dimensional_pair():
    assert mse([1.0, 3.0], [0.0, 0.0]) == pytest.approx(5.0)


def test_binary_cross_entropy_value():
    p = np.array([[0.8, 0.1, 0.5]])
    y = np.array([[1.0, 0.0, 1.0]])
    expected = -(np.log(0.8) + np.log(0.9) + np.log(0.5)) / 3
    assert binary_cross_entropy(p, y) == pytest.approx(expected)


def test_binary_cross_entropy_clips_saturated_outputs():
    value = binary_cross_entropy(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert np.isfinite(value)
    assert value == pytest.approx(-np.log(PROBABILITY_FLOOR), rel=1e-6)
    assert binary_cross_entropy(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])) < 1e-11


def test_categorical_cross_entropy_value():
    p = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]])
    y = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    expected = -(np.log(0.7) + np.log(0.3)) / 2
    assert categorical_cross_entropy(p, y) == pytest.approx(expected)


def test_categorical_cross_entropy_clips_zero_probability():
    p = np.array([[0.0], [1.0]])
    y = np.array([[1.0], [0.0]])
    assert categorical_cross_entropy(p, y) == pytest.approx(-np.log(PROBABILITY_FLOOR))


@pytest.mark.parametrize("loss", [mse, binary_cross_entropy, categorical_cross_entropy])
def test_loss_rejects_mismatched_shapes(loss):
    with pytest.raises(
        ShapeError, match=r"shape \(2, 3\) and targets of shape \(3, 2\)"
    ):
        loss(np.full((2, 3), 0.5), np.full((3, 2), 0.5))


def test_loss_rejects_empty_batch():
    with pytest.raises(ShapeError, match="at least one sample"):
        mse(np.zeros((1, 0)), np.zeros((1, 0)))


def test_loss_for_output_pairs():
    assert loss_for_output("identity") is mse
    assert loss_for_output("sigmoid") is binary_cross_entropy
    assert loss_for_output("softmax") is categorical_cross_entropy


def test_loss_for_output_rejects_unknown():
    with pytest.raises(
        InvalidValueError, match=r"unknown output activation 'tanh'.*softmax"
    ):
        loss_for_output("tanh")


def test_binary_accuracy_threshold():
    pred = np.array([[0.2, 0.5, 0.7, 0.4]])
    y = np.array([[0.0, 1.0, 1.0, 1.0]])
    assert accuracy(pred, y) == pytest.approx(0.75)
    assert accuracy(pred, y[0]) == pytest.approx(0.75)
    assert accuracy(pred[0], y[0]) == pytest.approx(0.75)


def test_multiclass_accuracy_one_hot_and_labels():
    pred = np.array([[0.6, 0.1, 0.3], [0.3, 0.8, 0.3], [0.1, 0.1, 0.4]])
    labels = np.array([0, 2, 2])
    one_hot = np.eye(3)[:, labels]
    assert accuracy(pred, one_hot) == pytest.approx(2 / 3)
    assert accuracy(pred, labels) == pytest.approx(2 / 3)


def test_accuracy_rejects_mismatched_labels():
    with pytest.raises(ShapeError, match=r"labels of shape \(2, 4\) do not match"):
        accuracy(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"pass 0/1 labels of shape \(1, 4\)"):
        accuracy(np.zeros((1, 4)), np.zeros(3))
    with pytest.raises(ShapeError, match="at least one sample"):
        accuracy(np.zeros((2, 0)), np.zeros(0))


def test_prepare_labels_reshapes_single_output():
    targets = prepare_labels([0.5, 1.5, -2.0], 1, "identity")
    assert targets.shape == (1, 3)
    assert targets.dtype == np.float64
    np.testing.assert_array_equal(targets[0], [0.5, 1.5, -2.0])


def test_prepare_labels_returns_copy():
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    targets = prepare_labels(y, 2, "softmax")
    targets[0, 0] = 5.0
    assert y[0, 0] == 0.0


def test_prepare_labels_integer_binary_labels():
    targets = prepare_labels(np.array([0, 1, 1]), 1, "sigmoid")
    assert targets.dtype == np.float64
    np.testing.assert_array_equal(targets, [[0.0, 1.0, 1.0]])


def test_prepare_labels_class_labels_become_one_hot():
    targets = prepare_labels(np.array([2, 0, 1, 2]), 3, "softmax")
    expected = np.array(
        [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    )
    np.testing.assert_array_equal(targets, expected)


def test_prepare_labels_whole_float_class_labels():
    targets = prepare_labels(np.array([1.0, 0.0]), 2, "softmax")
    np.testing.assert_array_equal(targets, [[0.0, 1.0], [1.0, 0.0]])


def test_prepare_labels_checks_sample_count():
    prepare_labels(np.zeros(4), 1, "identity", n_samples=4)
    with pytest.raises(
        InvalidValueError, match="labels have 4 samples but the inputs have 5"
    ):
        prepare_labels(np.zeros(4), 1, "identity", n_samples=5)


def test_prepare_labels_rejects_wrong_rows():
    with pytest.raises(
        InvalidValueError,
        match=r"labels of shape \(3, 10\) do not fit the identity output layer "
        r"with 2 unit\(s\); pass \(2, n_samples\)",
    ):
        prepare_labels(np.zeros((3, 10)), 2, "identity")


def test_prepare_labels_suggests_transpose():
    with pytest.raises(InvalidValueError, match=r"shape \(10, 3\).*pass y\.T"):
        prepare_labels(np.zeros((10, 3)), 3, "softmax")


def test_prepare_labels_rejects_vector_for_many_outputs():
    with pytest.raises(InvalidValueError, match=r"labels of shape \(5,\) do not fit"):
        prepare_labels(np.zeros(5), 2, "identity")


def test_prepare_labels_softmax_hint():
    with pytest.raises(InvalidValueError, match="integer class labels of shape"):
        prepare_labels(np.zeros((2, 2, 2)), 3, "softmax")


def test_prepare_labels_rejects_label_out_of_range():
    with pytest.raises(
        InvalidValueError,
        match=r"class label 3 at index 2 is out of range; valid labels for 3 "
        r"output units are 0 to 2",
    ):
        prepare_labels(np.array([0, 1, 3]), 3, "softmax")
    with pytest.raises(InvalidValueError, match=r"class label -1 at index 0"):
        prepare_labels(np.array([-1, 1]), 3, "softmax")


def test_prepare_labels_rejects_fractional_class_label():
    with pytest.raises(
        InvalidValueError, match=r"class label 1.5 at index 1 is not a whole"
    ):
        prepare_labels(np.array([0.0, 1.5]), 3, "softmax")


def test_prepare_labels_rejects_sigmoid_out_of_range():
    with pytest.raises(InvalidValueError, match=r"sigmoid target 2 at row 0, sample 1"):
        prepare_labels(np.array([[0.0, 2.0]]), 1, "sigmoid")
    with pytest.raises(
        InvalidValueError, match=r"sigmoid target -1 .*outside \[0, 1\]"
    ):
        prepare_labels(np.array([-1.0, 1.0]), 1, "sigmoid")


def test_prepare_labels_rejects_bad_softmax_columns():
    with pytest.raises(InvalidValueError, match="softmax targets of sample 1 sum to 2"):
        prepare_labels(np.array([[1.0, 1.0], [0.0, 1.0]]), 2, "softmax")
    with pytest.raises(
        InvalidValueError, match=r"softmax target -0.5 at row 1, sample 0"
    ):
        prepare_labels(np.array([[1.5, 1.0], [-0.5, 0.0]]), 2, "softmax")


def test_prepare_labels_accepts_soft_targets():
    targets = prepare_labels(np.array([[0.3, 1.0], [0.7, 0.0]]), 2, "softmax")
    np.testing.assert_allclose(targets.sum(axis=0), [1.0, 1.0])


def test_prepare_labels_rejects_non_finite():
    with pytest.raises(InvalidValueError, match="NaN or infinite"):
        prepare_labels(np.array([0.0, np.nan]), 1, "identity")
    with pytest.raises(InvalidValueError, match="class labels contain NaN"):
        prepare_labels(np.array([0.0, np.inf]), 2, "softmax")


def test_prepare_labels_rejects_non_numeric():
    with pytest.raises(
        InvalidValueError, match="labels of dtype <U1 are not real numbers"
    ):
        prepare_labels(np.array(["a", "b"]), 1, "identity")


def test_prepare_labels_rejects_empty():
    with pytest.raises(InvalidValueError, match="labels contain no samples"):
        prepare_labels(np.zeros((1, 0)), 1, "identity")


def test_prepare_labels_rejects_bad_layer():
    with pytest.raises(InvalidValueError, match="unknown output activation 'relu'"):
        prepare_labels(np.zeros(3), 1, "relu")
    with pytest.raises(InvalidValueError, match=r"n_out=0 is invalid"):
        prepare_labels(np.zeros(3), 0, "identity")
    with pytest.raises(InvalidValueError, match=r"softmax output needs n_out >= 2"):
        prepare_labels(np.zeros(3), 1, "softmax")
