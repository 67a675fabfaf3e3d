"""Tests of the asynchronous schedule, injected delays and vertex counters.

Every test except the argument checks starts real vertex and coordinator
actors on the local two-CPU Ray instance of the ``local_ray`` fixture. Starting
the actors costs more than the short runs themselves, so most tests use the
four-vertex network and share one synchronous reference run.
"""

from __future__ import annotations

import numpy as np
import pytest

import sheafsim as ss
from sheafsim.errors import InvalidValueError, RuntimeFailure
from sheafsim.runtime import ActorRunResult, DelayModel, ReportRow, diffuse_on_actors

pytestmark = pytest.mark.usefixtures("local_ray")

COUNTER_KEYS = {"steps", "messages_sent", "messages_received", "max_staleness"}

# Jittered delays of about a step's own cost, so messages arrive late and out of
# order.
DELAYS = DelayModel(compute_s=0.0005, message_s=0.001, jitter=0.5, seed=7)

# tol is out of reach, so a run stops after exactly max_steps steps.
FIXED_STEPS = {"dt": 0.1, "tol": 1e-300, "max_steps": 40, "report_every": 4}


def small_case() -> tuple[ss.NeuralSheaf, np.ndarray]:
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    return net, x


@pytest.fixture(scope="module")
def sync_reference(local_ray) -> ActorRunResult:
    """Synchronous run of the small case for ``FIXED_STEPS`` steps, no delays."""
    net, x = small_case()
    return diffuse_on_actors(net, x, timeout_s=120.0, **FIXED_STEPS)


def total(result: ActorRunResult, key: str) -> int:
    return sum(stats[key] for stats in result.vertex_stats.values())


def _step(row: ReportRow) -> int:
    return row.step


def max_forward_error(result: ActorRunResult, net: ss.NeuralSheaf, x: np.ndarray):
    forward = net.forward(x)
    return max(
        float(np.max(np.abs(result.state[v] - forward[v]))) for v in net.free_vertices
    )


def test_async_with_delays_reaches_forward_pass():
    net = ss.NeuralSheaf.random([3, 8, 6, 5, 2], seed=1)
    x = np.random.default_rng(1).normal(size=(3, 6))
    dt, tol = 0.25, 1e-7
    # A start 0.1 off the forward pass takes 1025 steps in process, against
    # 1242 from the default random start.
    forward = net.forward(x)
    rng = np.random.default_rng(2)
    init = {
        v: forward[v] + 0.1 * rng.standard_normal(forward[v].shape)
        for v in net.free_vertices
    }

    result = diffuse_on_actors(
        net,
        x,
        dt=dt,
        tol=tol,
        init=init,
        schedule="async",
        delays=DELAYS,
        max_steps=200_000,
        timeout_s=240.0,
    )

    assert result.status == "converged", result.message
    assert result.schedule == "async"
    # In process this case stops 1.1e-5 = 28 * tol / dt from the forward pass.
    bound = 100.0 * tol / dt
    assert np.max(np.abs(result.output - forward.output)) <= bound
    assert max_forward_error(result, net, x) <= bound
    assert result.max_update < tol
    assert result.quiescence_rounds >= 1
    assert total(result, "messages_sent") == total(result, "messages_received")
    stepping = net.free_vertices
    assert result.steps == max(result.vertex_stats[v]["steps"] for v in stepping)
    # Some message must have been used late, or the delays had no effect.
    assert max(result.vertex_stats[v]["max_staleness"] for v in stepping) >= 1


def test_async_report_rows():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))

    result = diffuse_on_actors(
        net, x, dt=0.1, tol=1e-6, schedule="async", report_every=5, timeout_s=60.0
    )

    assert result.status == "converged", result.message
    assert result.reports, "the coordinator kept no report"
    assert all(isinstance(row, ReportRow) for row in result.reports)
    assert {row.vertex for row in result.reports} == set(net.free_vertices)
    times = [row.time_s for row in result.reports]
    assert times == sorted(times)
    for row in result.reports:
        assert set(row.counters) == COUNTER_KEYS
        assert row.counters["steps"] == row.step
        assert row.max_update >= 0.0
    # z2 is the downstream end of affine2 and of no other edge.
    z2_energy = [row.energy for row in result.reports if row.vertex == "z2"]
    assert all(set(energy) == {"affine2"} for energy in z2_energy)
    assert result.energy_trace["energy"], "the energy trace is empty"


def test_staleness_bound_respected():
    net, x = small_case()
    tol, dt, bound = 1e-6, 0.1, 2
    # Latencies of up to 4 ms against 0.5 ms steps make messages several steps
    # old when they arrive.
    delays = DelayModel(compute_s=0.0005, message_s=0.002, jitter=0.9, seed=11)

    result = diffuse_on_actors(
        net,
        x,
        dt=dt,
        tol=tol,
        schedule="async",
        staleness_bound=bound,
        delays=delays,
        timeout_s=120.0,
    )

    assert result.status == "converged", result.message
    assert result.staleness_bound == bound
    staleness = {v: s["max_staleness"] for v, s in result.vertex_stats.items()}
    for vertex, observed in staleness.items():
        assert observed <= bound, f"{vertex} used a message {observed} steps old"
    assert max(staleness.values()) >= 1
    # In process this case stops 5.2e-5 = 5.2 * tol / dt from the forward pass.
    assert max_forward_error(result, net, x) <= 20.0 * tol / dt


def test_bound_zero_reproduces_sync(sync_reference):
    net, x = small_case()

    bounded = diffuse_on_actors(
        net,
        x,
        schedule="async",
        staleness_bound=0,
        delays=DELAYS,
        timeout_s=120.0,
        **FIXED_STEPS,
    )

    assert sync_reference.status == "max_steps"
    assert bounded.status == "max_steps"
    assert bounded.steps == sync_reference.steps == FIXED_STEPS["max_steps"]
    for vertex in net.vertices:
        difference = np.max(
            np.abs(bounded.state[vertex] - sync_reference.state[vertex])
        )
        assert difference <= 1e-12, f"{vertex} differs by {difference}"
    for vertex in net.free_vertices:
        assert bounded.vertex_stats[vertex]["steps"] == FIXED_STEPS["max_steps"]
        assert bounded.vertex_stats[vertex]["max_staleness"] == 0


def test_sync_counters_balance(sync_reference):
    net, _ = small_case()
    result = sync_reference

    stats = result.vertex_stats
    assert set(stats) == set(net.vertices)
    assert all(set(s) == COUNTER_KEYS for s in stats.values())
    assert total(result, "messages_sent") == total(result, "messages_received")
    assert all(s["max_staleness"] == 0 for s in stats.values())
    # x sends its one static message to z1 and takes no steps.
    assert stats["x"] == {
        "steps": 0,
        "messages_sent": 1,
        "messages_received": 0,
        "max_staleness": 0,
    }
    # A stepping vertex sends one message per step and stepping neighbour,
    # tag 0 included: z1 and z2 have one such neighbour, a1 has two.
    for vertex, neighbours in {"z1": 1, "a1": 2, "z2": 1}.items():
        assert stats[vertex]["steps"] == result.steps
        assert stats[vertex]["messages_sent"] == neighbours * (result.steps + 1)
    # Ray may run a vertex's reports out of order, so take the latest by step.
    last = max((row for row in result.reports if row.vertex == "a1"), key=_step)
    assert last.step == result.steps
    assert last.counters["steps"] == last.step


def test_slow_vertex_async_converges():
    net, x = small_case()
    tol, dt = 1e-6, 0.1
    delays = DelayModel(compute_s=0.001, jitter=0.2, slowdown={"a1": 5.0}, seed=5)

    result = diffuse_on_actors(
        net,
        x,
        dt=dt,
        tol=tol,
        schedule="async",
        delays=delays,
        timeout_s=120.0,
    )

    assert result.status == "converged", result.message
    # In process this case stops 5.2e-5 = 5.2 * tol / dt from the forward pass.
    assert max_forward_error(result, net, x) <= 20.0 * tol / dt
    stats = result.vertex_stats
    # a1 sleeps five times as long per step, so its neighbours step more often.
    assert stats["a1"]["steps"] < stats["z1"]["steps"]
    assert stats["a1"]["steps"] < stats["z2"]["steps"]


def test_delays_keep_sync_result(sync_reference):
    net, x = small_case()

    delayed = diffuse_on_actors(net, x, delays=DELAYS, timeout_s=120.0, **FIXED_STEPS)

    assert delayed.status == sync_reference.status
    assert delayed.steps == sync_reference.steps
    for vertex in net.vertices:
        np.testing.assert_array_equal(
            delayed.state[vertex], sync_reference.state[vertex]
        )
    np.testing.assert_array_equal(
        delayed.max_change_history, sync_reference.max_change_history
    )
    # The coordinator adds the energy terms in the order the reports arrive.
    assert delayed.energy_trace["step"] == sync_reference.energy_trace["step"]
    np.testing.assert_allclose(
        delayed.energy_trace["energy"],
        sync_reference.energy_trace["energy"],
        rtol=1e-12,
    )
    # Messages still waiting out their latency at the stop are never sent.
    assert total(delayed, "messages_sent") == total(delayed, "messages_received")


def test_failure_carries_reports():
    net, x = small_case()

    with pytest.raises(RuntimeFailure, match="vertex actor 'a1'") as caught:
        diffuse_on_actors(
            net,
            x,
            tol=1e-12,
            schedule="async",
            report_every=5,
            inject_fault=("a1", 30),
            timeout_s=60.0,
        )

    reports = caught.value.reports
    assert reports is not None, "the partial reports were not fetched"
    assert reports, "no report arrived before the fault"
    a1_steps = [row.step for row in reports if row.vertex == "a1"]
    assert a1_steps
    assert max(a1_steps) < 30


def test_delay_model_seeds_repeat():
    model = DelayModel(seed=3)

    first = [s.generate_state(2).tolist() for s in model.child_seeds(4)]
    second = [s.generate_state(2).tolist() for s in DelayModel(seed=3).child_seeds(4)]

    assert first == second
    assert len({tuple(state) for state in first}) == 4


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compute_s": -1.0}, "compute_s=-1.0 is invalid"),
        ({"message_s": float("inf")}, "message_s=inf is invalid"),
        ({"jitter": 1.5}, "jitter=1.5 is invalid"),
        ({"slowdown": {"a1": 0.0}}, r"slowdown\['a1'\]=0.0 is invalid"),
    ],
)
def test_delay_model_invalid(fields, message):
    with pytest.raises(InvalidValueError, match=message):
        DelayModel(**fields)


def test_async_arguments_invalid():
    net, x = small_case()

    with pytest.raises(InvalidValueError, match="applies only to schedule='async'"):
        diffuse_on_actors(net, x, staleness_bound=1)
    with pytest.raises(InvalidValueError, match="applies only to schedule='async'"):
        diffuse_on_actors(net, x, convergence_window=5)
    with pytest.raises(InvalidValueError, match="staleness_bound=-1 is invalid"):
        diffuse_on_actors(net, x, schedule="async", staleness_bound=-1)
    with pytest.raises(InvalidValueError, match="convergence_window=0 is invalid"):
        diffuse_on_actors(net, x, schedule="async", convergence_window=0)
    with pytest.raises(InvalidValueError, match=r"unknown vertices \['a9'\]"):
        diffuse_on_actors(net, x, delays=DelayModel(slowdown={"a9": 2.0}))
    with pytest.raises(InvalidValueError, match="must be a DelayModel"):
        diffuse_on_actors(net, x, delays={"compute_s": 0.1})  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="unknown schedule 'gossip'"):
        diffuse_on_actors(net, x, schedule="gossip")
