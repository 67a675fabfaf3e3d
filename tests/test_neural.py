import numpy as np
import pytest

import sheafsim as ss


def test_vertices_and_edges():
    net = ss.NeuralSheaf.random([2, 4, 3, 1], seed=0, output="sigmoid")
    assert net.vertices == ["x", "z1", "a1", "z2", "a2", "z3", "y_out"]
    kinds = [(e.name, e.kind, e.layer) for e in net.edges]
    assert kinds == [
        ("affine1", "affine", 1),
        ("activation1", "activation", 1),
        ("affine2", "affine", 2),
        ("activation2", "activation", 2),
        ("affine3", "affine", 3),
        ("output", "output", 3),
    ]
    assert net.stalk_dim("a2") == 3


def test_forward_returns_intermediates():
    net = ss.NeuralSheaf.random([3, 5, 2], seed=1, output="softmax")
    x = np.random.default_rng(0).normal(size=(3, 4))
    fp = net.forward(x)
    z1 = net.weights[0] @ x + net.biases[0]
    np.testing.assert_allclose(fp["z1"], z1)
    np.testing.assert_allclose(fp["a1"], np.maximum(z1, 0))
    np.testing.assert_allclose(fp.output.sum(axis=0), np.ones(4))


def test_he_initialisation_scale():
    net = ss.NeuralSheaf.random([400, 300, 1], seed=0)
    assert net.weights[0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.all(net.biases[0] == 0)


def test_from_sklearn_matches_predict_proba():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0)
    with pytest.warns(Warning):
        model.fit(data.data[:300], data.target[:300])
    net = ss.NeuralSheaf.from_sklearn(model)
    assert net.output == "softmax"
    np.testing.assert_allclose(
        net.forward(data.data[:50].T).output.T,
        model.predict_proba(data.data[:50]),
        atol=1e-12,
    )


def test_from_sklearn_regressor_and_binary():
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    reg = MLPRegressor(hidden_layer_sizes=(5, 4), max_iter=20, random_state=0)
    with pytest.warns(Warning):
        reg.fit(x, x[:, 0])
    net = ss.NeuralSheaf.from_sklearn(reg)
    assert net.output == "identity"
    np.testing.assert_allclose(net.forward(x.T).output[0], reg.predict(x), atol=1e-12)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0)
    with pytest.warns(Warning):
        clf.fit(x, x[:, 0] > 0)
    net = ss.NeuralSheaf.from_sklearn(clf)
    assert net.output == "sigmoid"
    np.testing.assert_allclose(
        net.forward(x.T).output[0], clf.predict_proba(x)[:, 1], atol=1e-12
    )


def test_from_sklearn_rejects_tanh():
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=(3,), activation="tanh", max_iter=5)
    with pytest.warns(Warning):
        model.fit(np.ones((4, 2)), np.ones(4))
    with pytest.raises(ss.InvalidValueError, match="activation='relu'"):
        ss.NeuralSheaf.from_sklearn(model)


def test_from_sklearn_rejects_unfitted():
    from sklearn.neural_network import MLPRegressor

    with pytest.raises(ss.InvalidValueError, match=r"call \.fit first"):
        ss.NeuralSheaf.from_sklearn(MLPRegressor())


def test_from_torch_sequential():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(3, 6),
        nn.ReLU(),
        nn.Linear(6, 4),
        nn.ReLU(),
        nn.Linear(4, 2),
        nn.Softmax(dim=-1),
    ).double()
    net = ss.NeuralSheaf.from_torch(module)
    assert net.widths == [3, 6, 4, 2]
    assert net.output == "softmax"
    x = np.random.default_rng(0).normal(size=(5, 3))
    expected = module(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(net.forward(x.T).output.T, expected, atol=1e-12)


def test_from_torch_rejects_other_layers():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    module = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    with pytest.raises(ss.InvalidValueError, match="layer 1 of the Sequential is Tanh"):
        ss.NeuralSheaf.from_torch(module)


def test_weight_shape_mismatch():
    with pytest.raises(ss.ShapeError, match=r"weight W2 has shape \(1, 5\)"):
        ss.NeuralSheaf([np.ones((4, 2)), np.ones((1, 5))], [np.zeros(4), np.zeros(1)])


def test_bias_shape_mismatch():
    with pytest.raises(ss.ShapeError, match=r"bias b1 has shape \(3,\)"):
        ss.NeuralSheaf([np.ones((4, 2))], [np.zeros(3)])


def test_bias_count_mismatch():
    with pytest.raises(ss.ShapeError, match="2 weight matrices but 1 bias"):
        ss.NeuralSheaf([np.ones((4, 2)), np.ones((1, 4))], [np.zeros(4)])


def test_nonfinite_weights():
    w = np.ones((2, 2))
    w[0, 1] = np.nan
    with pytest.raises(ss.InvalidValueError, match="W1 contains NaN"):
        ss.NeuralSheaf([w], [np.zeros(2)])


def test_unknown_activation():
    with pytest.raises(ss.InvalidValueError, match="unknown output activation 'tanh'"):
        ss.NeuralSheaf([np.ones((1, 2))], [np.zeros(1)], output="tanh")


def test_empty_network():
    with pytest.raises(ss.InvalidValueError, match="at least one weight matrix"):
        ss.NeuralSheaf([], [])


def test_bad_widths():
    with pytest.raises(ss.InvalidValueError, match=r"widths \[2, 0, 1\] are invalid"):
        ss.NeuralSheaf.random([2, 0, 1])


def test_input_rows_mismatch():
    net = ss.NeuralSheaf.random([3, 4, 1], seed=0)
    with pytest.raises(ss.ShapeError, match=r"input x has shape \(2, 5\)"):
        net.forward(np.ones((2, 5)))


def test_nonfinite_input():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="input x contains NaN"):
        net.forward(np.array([[1.0], [np.inf]]))


def test_unknown_vertex():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="unknown vertex 'a2'"):
        net.stalk_dim("a2")


def test_zero_width_layer():
    with pytest.raises(ss.ShapeError, match=r"layer widths \[2, 0\] contain 0"):
        ss.NeuralSheaf([np.ones((0, 2))], [np.zeros(0)])


def test_one_unit_softmax():
    with pytest.raises(ss.InvalidValueError, match="softmax over one output unit"):
        ss.NeuralSheaf.random([2, 3, 1], output="softmax")


def test_random_seed_rejected():
    with pytest.raises(ss.InvalidValueError, match="seed=-1 is invalid"):
        ss.NeuralSheaf.random([2, 3, 1], seed=-1)


def test_from_torch_without_torch(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.nn", None)
    with pytest.raises(ss.InvalidValueError, match=r"pip install 'sheafsim\[torch\]'"):
        ss.NeuralSheaf.from_torch(object())
