"""Vertex actors on array backends, and the GPU placement checks.

The actor tests run torch on the CPU on the local two-CPU Ray instance of the
``local_ray`` fixture and compare with the in-process numpy runs. The memory
guard and the share arithmetic are pure functions, tested without a GPU. The
one CUDA test runs only where torch and Ray both see a GPU.
"""

from __future__ import annotations

import asyncio

import networkx as nx
import numpy as np
import pytest
import ray
import reference_cases as rc
import scipy.sparse as sp

import sheafsim as ss
from sheafsim.backend import ArrayBackend
from sheafsim.dynamics import initial_state
from sheafsim.errors import InvalidValueError
from sheafsim.runtime import (
    diffuse_on_actors,
    diffuse_sheaf_on_actors,
    train_on_actors,
)
from sheafsim.runtime.gpu import (
    EDGE_TEMPORARIES,
    STALK_TEMPORARIES,
    actors_per_gpu,
    check_gpu_memory,
    estimate_actor_memory,
    gpu_share,
    kept_copies,
)
from sheafsim.runtime.maps import AffineMap
from sheafsim.runtime.spec import RunSettings, neural_vertex_specs
from sheafsim.runtime.vertex import VertexActor

torch = pytest.importorskip("torch")

# Loose enough for 60-210 steps per reference case, as in test_runtime.py.
FAST_TOL = 1e-2

# Each actor run starts torch in every stepping actor, which takes seconds on a
# two-core machine, so the default run replays two reference cases: one with a
# hard pin written after step 1 and one with a softmax output. The others are
# marked slow.
QUICK_REFERENCE_CASES = ("hard_pin_z1_2_4_1", "softmax_identity_3_5_3")
REFERENCE_CASES = [
    pytest.param(name, marks=() if name in QUICK_REFERENCE_CASES else pytest.mark.slow)
    for name in rc.names("inference")
]

# torch and numpy may sum in a different order, so the float64 runs agree to
# rounding, not bit for bit.
MATCH_ATOL = 1e-12

GIB = 2**30

TORCH_CPU = ArrayBackend("torch", "cpu", "float64")


def ray_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def run_names() -> list[str]:
    """Return the names of the live named actors of sheafsim runs."""
    return [n for n in ray.util.list_named_actors() if n.startswith("sheafsim-")]


def max_difference(actual: dict, expected: dict) -> float:
    return max(
        float(np.max(np.abs(actual[v] - np.asarray(expected[v])))) for v in expected
    )


def assert_host_float64(state: dict) -> None:
    for vertex, value in state.items():
        assert type(value) is np.ndarray, vertex
        assert value.dtype == np.float64, vertex


# ---------------------------------------------------------------- actor runs


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_reference_case_on_torch_matches_diffuse(name):
    case = rc.load(name)
    net = rc.network(case)
    x = np.array(case["x"])
    kwargs = rc.diffuse_kwargs(case)
    kwargs["tol"] = FAST_TOL

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, backend="torch", device="cpu", **kwargs)

    assert reference.status == "converged"
    assert actors.status == reference.status
    assert actors.steps == reference.steps
    assert len(actors.max_change_history) == actors.steps
    assert max_difference(actors.state, reference.state) <= MATCH_ATOL
    assert actors.max_update == pytest.approx(reference.max_update, rel=1e-9)
    assert actors.backend == "torch/cpu/float64"
    assert_host_float64(actors.state)
    assert type(actors.output) is np.ndarray


@pytest.mark.usefixtures("local_ray")
def test_torch_training_matches_in_process():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12))
    y = rng.integers(0, 3, size=12)
    net = ss.NeuralSheaf.random([2, 5, 3], seed=1, output="softmax")
    common = {"epochs": 2, "steps_per_epoch": 10, "x_test": x, "y_test": y}

    expected = ss.train(
        net, x, y, reset_each_epoch=False, init="random", return_state=True, **common
    )
    result = train_on_actors(net, x, y, backend="torch", **common)

    assert result.completed
    assert result.steps == 20
    assert result.backend == "torch/cpu/float64"
    pairs = [
        *zip(result.net.weights, expected.net.weights, strict=True),
        *zip(result.net.biases, expected.net.biases, strict=True),
    ]
    for actual, in_process in pairs:
        assert type(actual) is np.ndarray
        assert actual.dtype == np.float64
        assert np.max(np.abs(actual - in_process)) <= MATCH_ATOL
    assert max_difference(result.state, expected.state) <= MATCH_ATOL
    assert_host_float64(result.state)
    assert result.history["train_accuracy"] == expected.history["train_accuracy"]
    assert result.history["train_loss"] == pytest.approx(
        expected.history["train_loss"], rel=1e-10
    )


@pytest.mark.usefixtures("local_ray")
def test_float32_actors_converge_from_torch_input():
    float32 = ArrayBackend("torch", "cpu", "float32")
    net = float32.network(ss.NeuralSheaf.random([3, 6, 2], seed=2, output="sigmoid"))
    x = float32.asarray(np.random.default_rng(5).normal(size=(3, 6)))

    result = diffuse_on_actors(
        net,
        x,
        dt=0.05,
        tol=1e-4,
        integrator="nesterov",
        backend="torch",
        dtype="float32",
    )

    assert result.status == "converged"
    assert result.backend == "torch/cpu/float32"
    assert_host_float64(result.state)
    # float32 rounding (about 6e-8 relative) and tol 1e-4 leave errors far
    # below this bound.
    host = ArrayBackend()
    forward = host.network(net).forward(host.asarray(x))
    assert np.max(np.abs(result.output - forward.output)) < 1e-2
    assert result.error_vs_exact is not None
    assert result.error_vs_exact < 1e-2


@pytest.mark.usefixtures("local_ray")
def test_sparse_sheaf_on_torch_matches_diffuse_sheaf():
    graph = nx.path_graph(4)
    dims = {0: 2, 1: 3, 2: 2, 3: 2}
    rng = np.random.default_rng(6)
    maps = {}
    for edge in graph.edges:
        for vertex in edge:
            matrix = rng.normal(size=(2, dims[vertex])) / 2
            matrix[np.abs(matrix) < 0.2] = 0.0
            maps[(edge, vertex)] = sp.csr_array(matrix) if vertex % 2 else matrix
    sheaf = ss.CellularSheaf(graph, dims, maps)
    state = {v: rng.normal(size=(dims[v], 3)) for v in graph.nodes}
    kwargs = {
        "dt": 0.2,
        "tol": 1e-3,
        "integrator": "nesterov",
        "pins": [ss.HardPin(1, coords=[0], value=0.5)],
        "soft_pins": [ss.SoftPin(3, value=-0.2, gamma=2.0)],
    }

    reference = ss.diffuse_sheaf(sheaf, state, **kwargs)
    actors = diffuse_sheaf_on_actors(
        sheaf, state, backend="torch", timeout_s=120.0, **kwargs
    )

    assert reference.status == "converged"
    assert actors.status == reference.status
    assert actors.steps == reference.steps
    assert max_difference(actors.state, reference.state) <= MATCH_ATOL
    assert_host_float64(actors.state)


# ------------------------------------------------------------ vertex internals


class RecordingMethod:
    """Stand-in for an actor method: records the arguments of ``remote``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def remote(self, *args):
        self.calls.append(args)


class RecordingHandle:
    def __init__(self) -> None:
        self.receive = RecordingMethod()
        self.receive_static = RecordingMethod()


def small_specs(batch: int = 3):
    net = ss.NeuralSheaf.random([2, 4, 3], seed=0)
    x = np.random.default_rng(1).normal(size=(2, batch))
    values = initial_state(net, x, "random", 0)
    specs, _, _ = neural_vertex_specs(net, x, values, [], [], "jacobian", True)
    return {spec.name: spec for spec in specs}


def vertex_settings(backend: ArrayBackend) -> RunSettings:
    return RunSettings(
        step_size=0.01,
        integrator="euler",
        max_steps=10,
        report_every=5,
        window=10,
        backend=backend,
    )


def test_vertex_sends_numpy_and_receives_backend_arrays():
    specs = small_specs()
    backend = ArrayBackend("torch", "cpu", "float32")
    vertex = VertexActor(specs["a1"], vertex_settings(backend))

    assert isinstance(vertex.spec.value, torch.Tensor)
    assert vertex.spec.value.dtype == torch.float32
    affine = next(e.map for e in vertex.spec.edges if isinstance(e.map, AffineMap))
    assert isinstance(affine.weight, torch.Tensor)
    # The spec the driver built stays host numpy.
    assert isinstance(specs["a1"].value, np.ndarray)

    handles = {"z1": RecordingHandle(), "z2": RecordingHandle()}
    vertex.neighbours = handles
    vertex._send(0, vertex._restrict(vertex.spec.value))
    sent = [call for h in handles.values() for call in h.receive.calls]
    assert len(sent) == 2
    for edge, step, value in sent:
        assert step == 0
        assert type(value) is np.ndarray, edge
        assert value.dtype == np.float32, edge

    message = np.ones((4, 3))
    message.flags.writeable = False
    asyncio.run(vertex.receive("activation1", 0, message))
    stored = vertex.inbox.get("activation1", 0)
    assert isinstance(stored, torch.Tensor)
    assert stored.dtype == torch.float32


def test_static_vertex_stays_on_host():
    specs = small_specs()
    vertex = VertexActor(specs["x"], vertex_settings(ArrayBackend("torch")))

    assert vertex.backend == ArrayBackend("numpy", "cpu", "float64")
    assert type(vertex.spec.value) is np.ndarray


# ------------------------------------------------------------- bad arguments


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("entry", ["diffuse", "train", "sheaf"])
def test_cuda_without_gpus_fails_before_actors(entry):
    if ray_gpus() > 0:
        pytest.skip("the Ray cluster has a GPU")
    net = ss.NeuralSheaf.random([2, 3, 1], seed=0)
    x = np.random.default_rng(0).normal(size=(2, 4))
    cuda = {"backend": "torch", "device": "cuda"}
    match = "the Ray cluster has no GPU"
    with pytest.raises(InvalidValueError, match=match):
        if entry == "diffuse":
            diffuse_on_actors(net, x, **cuda)
        elif entry == "train":
            train_on_actors(net, x, x[:1], epochs=1, steps_per_epoch=5, **cuda)
        else:
            sheaf = ss.random_orthogonal_sheaf(nx.path_graph(3), dim=2, seed=0)
            diffuse_sheaf_on_actors(sheaf, {v: [0.0, 1.0] for v in range(3)}, **cuda)
    assert run_names() == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gpus_per_actor": 0.5}, "applies only to a CUDA backend"),
        ({"device": "cuda", "gpus_per_actor": 0.0}, r"give a share in \(0, 1\]"),
        ({"device": "cuda", "gpus_per_actor": 2}, r"give a share in \(0, 1\]"),
        ({"device": "cuda", "gpus_per_actor": 1e-5}, "below Ray's unit"),
        ({"device": "cuda", "gpus_per_actor": "half"}, "is invalid"),
        ({"device": "cuda:1"}, "use device='cuda'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
    ],
)
def test_invalid_backend_options_rejected(options, match):
    net = ss.NeuralSheaf.random([2, 3, 1], seed=0)
    x = np.zeros((2, 2))
    with pytest.raises(InvalidValueError, match=match):
        diffuse_on_actors(net, x, backend="torch", **options)


# ------------------------------------------------------- memory and placement


def test_memory_estimate_counts_stalks_edges_and_maps():
    batch = 7
    specs = small_specs(batch)
    f64 = estimate_actor_memory(
        specs.values(), ArrayBackend(), kept_stalks=3, kept_messages=2
    )

    # x is static and computes on the host.
    assert set(f64) == {"z1", "a1", "z2"}
    # a1 (dim 4): the identity end of activation1 (dim 4) and the affine end
    # of affine2, which maps to dim 3 and stores W2 (3 x 4) and b2 (3).
    values = 4 * (3 + STALK_TEMPORARIES) + (4 + 3) * (EDGE_TEMPORARIES + 2)
    assert f64["a1"] == 8 * batch * values + 8 * (3 * 4 + 3)
    # z1 also keeps one boolean mask per kept stalk.
    z1_values = 4 * (3 + STALK_TEMPORARIES) + (4 + 4) * (EDGE_TEMPORARIES + 2)
    assert f64["z1"] == 8 * batch * z1_values + 3 * 4 * batch

    f32 = estimate_actor_memory(
        specs.values(), ArrayBackend("torch", "cuda", "float32"), kept_stalks=3
    )
    assert f32["a1"] * 2 == f64["a1"]
    twice = estimate_actor_memory(
        small_specs(2 * batch).values(), ArrayBackend(), kept_stalks=3
    )
    assert twice["a1"] - 8 * 15 == 2 * (f64["a1"] - 8 * 15)


def test_kept_copies_follow_schedule():
    settings = vertex_settings(ArrayBackend())
    assert kept_copies(settings) == (11, 2)
    bounded = RunSettings(0.1, "euler", 10, 5, 10, schedule="async", staleness_bound=3)
    assert kept_copies(bounded) == (1, 5)
    unbounded = RunSettings(0.1, "euler", 10, 5, 10, schedule="async")
    assert kept_copies(unbounded)[0] == 1


def test_memory_guard_passes_when_actors_fit():
    estimates = {"z1": 3 * GIB, "a1": 2 * GIB, "z2": 1 * GIB}
    check_gpu_memory(estimates, 5 * GIB, actors_per_gpu=2)
    check_gpu_memory(estimates, 6 * GIB, actors_per_gpu=3)
    check_gpu_memory({}, 0, actors_per_gpu=1)


def test_memory_guard_reports_numbers_and_fixes():
    estimates = {"z1": 3 * GIB, "a1": 2 * GIB, "z2": 1 * GIB}
    with pytest.raises(InvalidValueError) as raised:
        check_gpu_memory(
            estimates,
            6 * GIB,
            actors_per_gpu=3,
            context_bytes=GIB // 2,
            device_name="NVIDIA H200",
        )
    message = str(raised.value)
    # The three largest actors with half a GiB of context each: 7.5 GiB.
    assert "7.50 GiB" in message
    assert "NVIDIA H200 has 6.00 GiB" in message
    assert "3 actors per GPU" in message
    assert "0.50 GiB of CUDA context" in message
    assert "fewer samples" in message
    assert "dtype='float32'" in message
    # Only one 3.5 GiB actor fits in 6 GiB, so the fix is one actor per GPU.
    assert "gpus_per_actor=1 places at most 1 on each GPU" in message
    assert "needs 3 GPUs" in message


def test_memory_guard_when_one_actor_is_too_large():
    with pytest.raises(InvalidValueError, match="even one actor alone"):
        check_gpu_memory({"z1": 9 * GIB}, 8 * GIB, actors_per_gpu=1)


def test_memory_guard_advice_fits_the_run():
    with pytest.raises(InvalidValueError) as raised:
        check_gpu_memory({"z1": 9 * GIB}, 8 * GIB, actors_per_gpu=1, dtype="float32")
    assert "dtype='float32'" not in str(raised.value)
    assert "1 actor per GPU" in str(raised.value)
    assert "fewer actors on each GPU" not in str(raised.value)
    with pytest.raises(InvalidValueError, match="the CUDA context alone"):
        check_gpu_memory({"z1": 10}, GIB // 4, actors_per_gpu=1, context_bytes=GIB // 2)


def test_gpu_share_rounds_down_to_ray_unit():
    assert gpu_share(None, 6) == pytest.approx(0.1666)
    assert actors_per_gpu(gpu_share(None, 6), 6) == 6
    assert gpu_share(1 / 3, 6) == pytest.approx(0.3333)
    assert actors_per_gpu(gpu_share(1 / 3, 6), 6) == 3
    assert actors_per_gpu(gpu_share(0.25, 2), 2) == 2
    assert actors_per_gpu(1.0, 5) == 1
    assert gpu_share(None, 1) == 1.0


# ---------------------------------------------------------------------- CUDA


@pytest.mark.usefixtures("local_ray")
def test_cuda_actors_match_diffuse():
    if not torch.cuda.is_available() or ray_gpus() < 1:
        pytest.skip("needs a CUDA device visible to torch and to Ray")
    case = rc.load("softmax_identity_3_5_3")
    net = rc.network(case)
    x = np.array(case["x"])
    kwargs = rc.diffuse_kwargs(case)
    kwargs["tol"] = FAST_TOL

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, backend="torch", device="cuda", **kwargs)

    assert actors.steps == reference.steps
    assert max_difference(actors.state, reference.state) <= MATCH_ATOL
    assert actors.backend == "torch/cuda/float64"
    assert_host_float64(actors.state)
