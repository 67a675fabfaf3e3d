"""Training and diffusion on numpy and torch backends in float64 and float32."""

import numpy as np
import pytest
import reference_cases as rc

import sheafsim as ss
from sheafsim.backend import ArrayBackend, to_numpy
from sheafsim.errors import InvalidValueError
from sheafsim.training import train

torch = pytest.importorskip("torch")

TRAINING_CASES = rc.names("training")


def replay(case, **options):
    """Train a reference training case for its recorded steps."""
    settings = case["settings"]
    return train(
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
        **options,
    )


def max_difference(actual, expected):
    host = np.asarray(to_numpy(actual), dtype=np.float64)
    return float(np.max(np.abs(host - np.asarray(expected, dtype=np.float64))))


def relative(actual, expected):
    scale = max(float(np.max(np.abs(np.asarray(expected)))), 1e-300)
    return max_difference(actual, expected) / scale


@pytest.fixture
def regression():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(2, 60))
    y = (x**2).sum(axis=0, keepdims=True) - 2 / 3
    return ss.NeuralSheaf.random([2, 8, 1], seed=0), x, y


@pytest.mark.parametrize("name", TRAINING_CASES)
def test_torch_float64_training_equals_numpy(name):
    case = rc.load(name)
    expected = replay(case)
    result = replay(case, backend="torch")
    assert result.completed
    assert result.steps == expected.steps
    for layer in range(len(expected.net.weights)):
        weight = result.net.weights[layer]
        assert isinstance(weight, torch.Tensor)
        assert weight.dtype == torch.float64
        assert max_difference(weight, expected.net.weights[layer]) < 1e-12
        bias = result.net.biases[layer]
        assert max_difference(bias, expected.net.biases[layer]) < 1e-12
    for vertex, value in expected.state.items():
        assert isinstance(result.state[vertex], torch.Tensor)
        assert max_difference(result.state[vertex], value) < 1e-12
    # Both also reproduce the authors' reference run.
    reference = case["expected"]
    for layer, weight in enumerate(reference["weights"]):
        assert relative(result.net.weights[layer], weight) < 1e-9
    assert result.history["train_loss"] == pytest.approx(
        expected.history["train_loss"], rel=1e-12
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", TRAINING_CASES)
def test_float32_training_follows_reference(name, backend):
    case = rc.load(name)
    result = replay(case, backend=backend, dtype="float32")
    assert result.completed
    assert ArrayBackend(backend, "cpu", "float32").matches(result.net.weights[0])
    reference = case["expected"]
    for layer, (weight, bias) in enumerate(
        zip(reference["weights"], reference["biases"], strict=True)
    ):
        assert relative(result.net.weights[layer], weight) < 1e-4
        assert relative(to_numpy(result.net.biases[layer]).ravel(), bias) < 1e-4
    for i, z in enumerate(reference["state"]["z"], start=1):
        assert relative(result.state[f"z{i}"], z) < 1e-3
    assert result.history["train_loss"][-1] == pytest.approx(
        reference["forward_loss"], rel=1e-4
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_training_lowers_loss(regression, backend):
    net, x, y = regression
    result = train(
        net, x, y, epochs=5, steps_per_epoch=400, backend=backend, dtype="float32"
    )
    losses = result.history["train_loss"]
    assert result.completed
    assert losses[-1] < 0.5 * losses[0]
    assert all(type(loss) is float for loss in losses)
    assert all(type(value) is float for value in result.energy)


def test_torch_network_trains_on_its_backend(regression):
    net, x, y = regression
    tnet = ArrayBackend("torch", dtype="float32").network(net)
    result = train(tnet, torch.as_tensor(x), y, epochs=1, steps_per_epoch=20)
    assert result.net.weights[0].dtype == torch.float32
    # The input network keeps its weights.
    assert torch.equal(tnet.weights[0], torch.as_tensor(net.weights[0]).float())


def test_numpy_float32_network_trains_in_float64(regression):
    net, x, y = regression
    result = train(
        ArrayBackend(dtype="float32").network(net), x, y, epochs=1, steps_per_epoch=5
    )
    assert result.net.weights[0].dtype == np.float64
    only_dtype = train(net, x, y, epochs=1, steps_per_epoch=5, dtype="float32")
    assert only_dtype.net.weights[0].dtype == np.float32


def test_torch_training_with_pins_and_test_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 40))
    labels = rng.integers(0, 3, size=40)
    net = ss.NeuralSheaf.random([3, 6, 3], seed=1, output="softmax")
    options = {
        "epochs": 2,
        "steps_per_epoch": 30,
        "x_test": x[:, :10],
        "y_test": labels[:10],
        "pins": [ss.HardPin("a1", [0], 0.0)],
        "soft_pins": [ss.SoftPin("z1", [1, 2], 0.5, gamma=2.0)],
        "return_state": True,
        "spectral_every": 30,
        "spectral_samples": 8,
    }
    expected = train(net, x, labels, **options)
    result = train(net, x, labels, backend="torch", **options)
    assert bool(torch.all(result.state["a1"][0] == 0.0))
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert result.history[key] == pytest.approx(expected.history[key], rel=1e-10)
    assert result.spectra["step"] == [0, 30, 60]
    assert result.spectra["lambda_min_median"] == pytest.approx(
        expected.spectra["lambda_min_median"], rel=1e-9
    )
    assert max_difference(result.net.weights[1], expected.net.weights[1]) < 1e-12


def test_torch_divergence_keeps_last_finite_weights(regression):
    net, x, y = regression
    result = train(
        net, x, y, beta=50.0, dt=0.5, epochs=3, steps_per_epoch=200, backend="torch"
    )
    assert result.status == "diverged"
    assert "at step" in result.message
    assert all(bool(torch.all(torch.isfinite(w))) for w in result.net.weights)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"backend": "jax"}, "unknown array backend 'jax'"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
        ({"device": "cuda"}, "numpy arrays live on the CPU"),
        ({"backend": "torch", "device": "gpu"}, "unknown device 'gpu'"),
        (
            {"backend": ArrayBackend("torch"), "dtype": "float32"},
            "inside the ArrayBackend",
        ),
        ({"backend": 64}, "backend must be an ArrayBackend"),
    ],
)
def test_training_backend_errors(regression, options, match):
    net, x, y = regression
    with pytest.raises(InvalidValueError, match=match):
        train(net, x, y, epochs=1, steps_per_epoch=1, **options)


def test_training_on_missing_cuda_fails(regression):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    net, x, y = regression
    with pytest.raises(InvalidValueError, match="torch sees no CUDA device"):
        train(net, x, y, epochs=1, steps_per_epoch=1, backend="torch", device="cuda")
