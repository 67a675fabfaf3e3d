import numpy as np
import pytest
import reference_cases as ref

import sheafsim as ss
from sheafsim.backend import ArrayBackend, backend_of
from sheafsim.errors import InvalidValueError

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).normal(size=(3, 6))


@pytest.mark.parametrize("name", ref.names("inference"))
def test_torch_cpu_matches_numpy_on_reference(name):
    case = ref.load(name)
    net = ref.network(case)
    x = np.array(case["x"])
    kwargs = ref.diffuse_kwargs(case)
    expected = ss.diffuse(net, x, **kwargs)
    result = ss.diffuse(net, x, backend="torch", **kwargs)
    assert result.steps == expected.steps
    assert result.status == expected.status
    for vertex in net.free_vertices:
        assert isinstance(result.state[vertex], torch.Tensor)
        np.testing.assert_allclose(
            result.state[vertex].numpy(), expected.state[vertex], atol=1e-12
        )
    assert result.trace["energy"] == pytest.approx(expected.trace["energy"], rel=1e-9)


def test_torch_nesterov_and_crossings():
    net = ss.NeuralSheaf.random([3, 8, 5, 2], seed=1, output="softmax")
    x = np.random.default_rng(0).normal(size=(3, 6))
    tnet = net.to(None, dtype=torch.float64)
    for integrator in ("euler", "nesterov"):
        a = ss.diffuse(net, x, dt=0.05, tol=1e-10, integrator=integrator)
        b = ss.diffuse(
            tnet, torch.as_tensor(x), dt=0.05, tol=1e-10, integrator=integrator
        )
        assert a.steps == b.steps
        np.testing.assert_array_equal(a.crossings, b.crossings)
        np.testing.assert_allclose(b.output.numpy(), a.output, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ref.names("inference"))
def test_float32_reaches_reference_outputs(name, backend):
    case = ref.load(name)
    net = ref.network(case)
    # Nesterov reaches the same fixed point in fewer steps than Euler.
    kwargs = ref.diffuse_kwargs(case) | {"tol": 1e-6, "integrator": "nesterov"}
    result = ss.diffuse(
        net, np.array(case["x"]), backend=backend, dtype="float32", **kwargs
    )
    assert result.status == "converged"
    output = ss.backend.to_numpy(result.output)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, case["expected"]["output"], atol=1e-3)


def test_diffuse_converts_network_input_and_state():
    net = ss.NeuralSheaf.random([3, 8, 5, 2], seed=1, output="softmax")
    start = ss.initial_state(net, X, "random", seed=3)
    result = ss.diffuse(
        net, X, state=start, dt=0.05, tol=1e-5, backend="torch", dtype="float32"
    )
    assert result.output.dtype == torch.float32
    assert result.state["x"].dtype == torch.float32
    assert backend_of(result.state["z1"]) == ArrayBackend("torch", "cpu", "float32")
    # The network and the state passed in stay numpy float64.
    assert net.weights[0].dtype == np.float64
    assert start["z1"].dtype == np.float64
    reference = ss.diffuse(net, X, state=start, dt=0.05, tol=1e-5, dtype="float32")
    assert isinstance(reference.output, np.ndarray)
    assert reference.output.dtype == np.float32
    assert reference.steps == pytest.approx(result.steps, abs=5)


def test_diffuse_dtype_alone_keeps_network_library():
    net = ss.NeuralSheaf.random([3, 8, 2], seed=1).to(None, dtype=torch.float64)
    result = ss.diffuse(net, X, dtype="float32", dt=0.05, tol=1e-5)
    assert result.output.dtype == torch.float32
    assert net.weights[0].dtype == torch.float64
    back = ss.diffuse(net, torch.as_tensor(X), backend="numpy", dt=0.05, tol=1e-8)
    assert isinstance(back.output, np.ndarray)
    assert back.output.dtype == np.float64


def test_diffuse_init_mapping_converted():
    net = ss.NeuralSheaf.random([3, 8, 2], seed=1)
    init = {v: np.zeros((net.stalk_dim(v), 6)) for v in net.free_vertices}
    result = ss.diffuse(net, X, init=init, backend="torch", dt=0.05, tol=1e-8)
    assert isinstance(result.output, torch.Tensor)
    assert all(np.all(value == 0.0) for value in init.values())
    expected = ss.diffuse(net, X, init=init, dt=0.05, tol=1e-8)
    np.testing.assert_allclose(result.output.numpy(), expected.output, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"backend": "jax"}, "unknown array backend 'jax'"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
        ({"device": "cuda:0"}, "numpy arrays live on the CPU, not on 'cuda:0'"),
        ({"backend": "torch", "device": "cuda:x"}, "invalid index"),
        (
            {"backend": ArrayBackend("torch"), "device": "cpu"},
            "inside the ArrayBackend",
        ),
        ({"backend": 1.0}, "backend must be an ArrayBackend"),
    ],
)
def test_diffuse_backend_errors(options, match):
    net = ss.NeuralSheaf.random([3, 8, 2], seed=1)
    with pytest.raises(InvalidValueError, match=match):
        ss.diffuse(net, X, **options)


def test_diffuse_on_missing_cuda_fails():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    net = ss.NeuralSheaf.random([3, 8, 2], seed=1)
    with pytest.raises(InvalidValueError, match="torch sees no CUDA device"):
        ss.diffuse(net, X, backend="torch", device="cuda")


@pytest.mark.slow
def test_gpu_check_script_in_cpu_mode(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    report = tmp_path / "gpu_check.json"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    # Ray's AF_UNIX socket paths must stay under 107 bytes.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "examples/gpu_check.py", "--cpu", "--quick"]
    try:
        completed = subprocess.run(
            [*command, str(report)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    data = json.loads(report.read_text())
    assert data["ok"] is True
    assert data["device"] == "cpu"
    assert data["quick"] is True
    assert data["total_s"] < 300

    environment = data["environment"]
    assert environment["error"] is None
    for key in ("torch_version", "sheafsim_version", "device_name"):
        assert environment[key]
    assert environment["device_total_memory_bytes"] > 0
    assert "torch_cuda_build" in environment

    reference = data["reference_cases"]
    assert reference["error"] is None
    assert [case["name"] for case in reference["cases"]] == ref.names("inference")
    assert reference["all_steps_equal"] is True
    assert reference["max_abs_output_difference"] <= 1e-12

    digits = data["digits"]
    assert digits["error"] is None
    assert digits["backend"] == "torch/cpu/float64"
    assert digits["steps_device"] == digits["steps_numpy"]
    assert digits["max_abs_error_vs_predict_proba_device"] < 1e-6
    assert digits["max_abs_output_difference"] < 1e-9

    timing = data["heat_step_timing"]
    assert timing["error"] is None
    assert [row["backend"] for row in timing["device"]] == [
        "torch/cpu/float32",
        "torch/cpu/float64",
    ]
    for row in [*timing["device"], timing["numpy_cpu"]]:
        assert row["forward_ms"] > 0
        assert row["heat_step_ms"] > 0
        assert row["ratio"] > 0

    actors = data["actors"]
    assert actors["error"] is None
    assert actors["actor_backend"] == "torch/cpu/float64"
    assert actors["steps"] == actors["steps_in_process"]
    assert actors["max_abs_output_difference_vs_numpy_in_process"] <= 1e-12
