"""Tests of the Ray actor runtime against the in-process heat equation.

Every test starts real vertex and coordinator actors on a local two-CPU Ray
instance. A synchronous actor step took 5-20 ms there on a shared two-core
machine, against tens of microseconds in process, so the reference cases run with
a looser tolerance than their stored settings. The full-tolerance replay is
marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import ray
import reference_cases as rc

import sheafsim as ss
from sheafsim.errors import InvalidValueError, RuntimeFailure, ShapeError
from sheafsim.runtime import ActorRunResult, diffuse_on_actors

SMALL_REFERENCE_CASES = [
    "relu_2_4_1",
    "hard_pin_z1_2_4_1",
    "soft_pin_z1_gamma3_2_4_1",
    "sigmoid_jacobian_2_4_1",
    "softmax_identity_3_5_3",
    "relu_deep_2_6_4_4_1",
]

# Loose enough for 60-210 steps per case, so the file stays near two minutes.
FAST_TOL = 1e-2

# The actor run repeats the in-process arithmetic operation for operation.
MATCH_ATOL = 1e-12


pytestmark = pytest.mark.usefixtures("local_ray")


def run_names() -> list[str]:
    """Return the names of the live named actors of sheafsim runs."""
    return [n for n in ray.util.list_named_actors() if n.startswith("sheafsim-")]


def max_state_difference(actors: ActorRunResult, reference: ss.DiffusionResult):
    return max(
        float(np.max(np.abs(actors.state[v] - reference.state[v])))
        for v in reference.state
    )


def assert_same_run(actors: ActorRunResult, reference: ss.DiffusionResult) -> None:
    assert actors.status == reference.status
    assert actors.steps == reference.steps
    assert set(actors.state) == set(reference.state)
    assert max_state_difference(actors, reference) <= MATCH_ATOL
    assert actors.max_update == pytest.approx(reference.max_update, rel=1e-9)
    assert len(actors.max_change_history) == actors.steps


@pytest.mark.parametrize("name", SMALL_REFERENCE_CASES)
def test_reference_case_matches_diffuse(name):
    case = rc.load(name)
    net = rc.network(case)
    x = np.array(case["x"])
    kwargs = rc.diffuse_kwargs(case)
    kwargs["tol"] = FAST_TOL

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, **kwargs)

    assert reference.status == "converged"
    assert_same_run(actors, reference)
    assert actors.n_actors == len(net.vertices) + 1
    assert actors.schedule == "sync"


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_REFERENCE_CASES)
def test_reference_case_full_tolerance(name):
    case = rc.load(name)
    net = rc.network(case)
    x = np.array(case["x"])
    kwargs = rc.diffuse_kwargs(case)

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, **kwargs)

    assert_same_run(actors, reference)
    expected = np.array(case["expected"]["output"])
    np.testing.assert_allclose(actors.output, expected, rtol=1e-9, atol=1e-12)


def test_output_matches_forward_pass():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    alpha, dt, tol = 1.0, 0.1, 1e-5
    calls = []

    result = diffuse_on_actors(
        net,
        x,
        alpha=alpha,
        dt=dt,
        tol=tol,
        progress=lambda step, change, elapsed: calls.append((step, change)),
        progress_interval_s=0.2,
    )

    assert result.status == "converged"
    # In process this run ends about 5 * tol / (alpha * dt) from the forward
    # pass, so the factor 20 leaves a margin of 4.
    bound = 20.0 * tol / (alpha * dt)
    forward = net.forward(x)
    assert np.max(np.abs(result.output - forward.output)) < bound
    for vertex in net.free_vertices:
        assert np.max(np.abs(result.state[vertex] - forward[vertex])) < bound
    np.testing.assert_array_equal(result.state["x"], x)
    assert calls, "the progress callback was never called"
    assert [step for step, _ in calls] == sorted(step for step, _ in calls)
    assert result.energy_trace["energy"][-1] < result.energy_trace["energy"][0]


def test_max_steps_status():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    kwargs = {"tol": 1e-9, "max_steps": 7}

    reference = ss.diffuse(net, x, **kwargs)
    # 7 is no multiple of report_every, and window == report_every is the
    # tightest permit the vertices accept.
    actors = diffuse_on_actors(net, x, report_every=3, window=3, **kwargs)

    assert actors.status == "max_steps"
    assert actors.steps == 7
    assert_same_run(actors, reference)
    assert "max_steps=7" in actors.message


def test_diverged_status_ends_run():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    kwargs = {"dt": 3.0, "check_step": False, "max_steps": 5_000}

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, timeout_s=60.0, **kwargs)

    assert reference.status == "diverged"
    assert actors.status == "diverged"
    assert actors.steps == reference.steps
    assert "lower dt" in actors.message


@pytest.mark.parametrize("name", ["relu_2_4_1", "hard_pin_z1_2_4_1"])
def test_nesterov_matches_diffuse(name):
    case = rc.load(name)
    net = rc.network(case)
    x = np.array(case["x"])
    kwargs = rc.diffuse_kwargs(case)
    kwargs.update(tol=1e-6, integrator="nesterov")

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, **kwargs)

    assert reference.status == "converged"
    assert_same_run(actors, reference)
    assert actors.integrator == "nesterov"


@pytest.mark.parametrize(
    ("pin_initial_state", "integrator"),
    [(True, "euler"), (False, "euler"), (False, "nesterov")],
)
def test_fully_pinned_vertex_matches_diffuse(pin_initial_state, integrator):
    # A fully pinned y_out is a static vertex: it sends its value once.
    net = ss.NeuralSheaf.random([2, 3, 1], seed=2, output="sigmoid")
    x = np.random.default_rng(3).normal(size=(2, 4))
    kwargs = {
        "tol": 1e-2,
        "pins": [ss.HardPin("y_out", None, [[0.2, 0.9, 0.5, 0.1]])],
        "soft_pins": [ss.SoftPin("a1", [0], 0.3, gamma=2.0)],
        "pin_initial_state": pin_initial_state,
        "integrator": integrator,
    }

    reference = ss.diffuse(net, x, **kwargs)
    actors = diffuse_on_actors(net, x, **kwargs)

    assert reference.status == "converged"
    assert_same_run(actors, reference)
    np.testing.assert_array_equal(actors.state["y_out"], reference.state["y_out"])


def test_invalid_arguments_raise_before_actors():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.zeros((2, 3))
    before = run_names()

    with pytest.raises(ShapeError, match=r"input x has shape \(3, 2\)"):
        diffuse_on_actors(net, np.zeros((3, 2)))
    with pytest.raises(InvalidValueError, match="integrator 'heavy_ball'"):
        diffuse_on_actors(net, x, integrator="heavy_ball")
    with pytest.raises(InvalidValueError, match="unknown schedule 'gossip'"):
        diffuse_on_actors(net, x, schedule="gossip")
    with pytest.raises(InvalidValueError, match="window=2 is smaller"):
        diffuse_on_actors(net, x, report_every=5, window=2)
    with pytest.raises(ss.StepSizeError, match="too large"):
        diffuse_on_actors(net, x, dt=3.0)

    assert run_names() == before


def test_vertex_exception_raises_runtime_failure():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))

    with pytest.raises(RuntimeFailure, match="vertex actor 'a1'") as caught:
        diffuse_on_actors(net, x, tol=1e-12, inject_fault=("a1", 25), timeout_s=60.0)

    assert "injected fault" in str(caught.value)
    assert run_names() == []


def test_killed_vertex_raises_runtime_failure():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    killed = []

    def kill_z1_mid_run(step, max_change, elapsed_s):
        if step < 20 or killed:
            return
        (name,) = [n for n in run_names() if n.endswith("-z1")]
        ray.kill(ray.get_actor(name))
        killed.append(step)

    # tol is far below what the run can reach, so only the kill ends it.
    with pytest.raises(RuntimeFailure, match="vertex actor 'z1'"):
        diffuse_on_actors(
            net,
            x,
            tol=1e-300,
            max_steps=10**6,
            progress=kill_z1_mid_run,
            progress_interval_s=0.1,
            timeout_s=90.0,
        )

    assert killed, "the run ended before z1 was killed"
    assert run_names() == []
