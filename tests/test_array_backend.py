"""ArrayBackend: names, devices, precisions and conversions."""

import numpy as np
import pytest

import sheafsim as ss
from sheafsim.backend import ArrayBackend, backend_of, resolve_backend
from sheafsim.errors import InvalidValueError

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).normal(size=(3, 6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "jax"}, "unknown array backend 'jax'"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
        ({"device": "cuda"}, "numpy arrays live on the CPU, not on 'cuda'"),
        ({"name": "torch", "device": "tpu"}, "unknown device 'tpu'"),
        ({"name": "torch", "device": "cuda:x"}, "invalid index"),
    ],
)
def test_backend_rejects_bad_names(kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        ArrayBackend(**kwargs)


def test_cuda_without_gpu_fails_on_use():
    backend = ArrayBackend("torch", "cuda", "float32")
    assert backend.is_cuda
    assert str(backend) == "torch/cuda/float32"
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidValueError, match="torch sees no CUDA device"):
        backend.asarray(X)


def test_resolve_backend():
    assert resolve_backend() == ArrayBackend()
    assert resolve_backend("torch", dtype="float32") == ArrayBackend(
        "torch", "cpu", "float32"
    )
    backend = ArrayBackend("torch")
    assert resolve_backend(backend) is backend
    with pytest.raises(InvalidValueError, match="inside the ArrayBackend"):
        resolve_backend(backend, dtype="float32")
    with pytest.raises(InvalidValueError, match="got int"):
        resolve_backend(3)


@pytest.mark.parametrize(
    "backend",
    [
        ArrayBackend("numpy", "cpu", "float32"),
        ArrayBackend("torch", "cpu", "float64"),
        ArrayBackend("torch", "cpu", "float32"),
    ],
    ids=str,
)
def test_conversions_keep_backend_through_diffusion(backend):
    net = ss.NeuralSheaf.random([3, 8, 5, 2], seed=1, output="softmax")
    converted = backend.network(net)
    x = backend.asarray(X)
    assert backend.matches(x)
    assert all(backend.matches(w) for w in converted.weights)
    assert backend_of(x) == backend
    tol = 1e-10 if backend.dtype == "float64" else 1e-5
    result = ss.diffuse(converted, x, dt=0.05, tol=tol)
    assert result.status == "converged"
    assert backend.matches(result.output)
    expected = net.forward(X).output
    atol = 1e-9 if backend.dtype == "float64" else 1e-3
    np.testing.assert_allclose(ss.backend.to_numpy(result.output), expected, atol=atol)
    # The source network is left as it was.
    assert net.weights[0].dtype == np.float64


def test_float32_tolerance_warning():
    net = ss.NeuralSheaf.random([3, 4, 1], seed=0)
    with pytest.warns(UserWarning, match="tol=1e-09 is below what float32"):
        ss.diffuse(net, X, dtype="float32", max_steps=20)
    with pytest.warns(UserWarning, match="use tol >= 1e-06 with float32"):
        from sheafsim.backend import check_tolerance

        check_tolerance(torch.float32, 1e-8)
