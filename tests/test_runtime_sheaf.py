"""Tests of general cellular sheaves on Ray vertex actors.

The actor tests start real vertex and coordinator actors on the local two-CPU
Ray instance of the ``local_ray`` fixture. Starting the actors costs more than
the short runs themselves, so the sheaves have at most seven vertices and the
synchronous runs use a loose ``tol``: they check agreement with
``diffuse_sheaf``, not accuracy.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import ortho_group

import sheafsim as ss
from sheafsim.errors import InvalidValueError, StepSizeError
from sheafsim.runtime import ActorRunResult, DelayModel, diffuse_sheaf_on_actors

pytestmark = pytest.mark.usefixtures("local_ray")

# A synchronous actor run repeats the in-process arithmetic operation for
# operation, so the states agree to the last bit. The tests allow the 1e-12
# that docs/design.md states.
MATCH_ATOL = 1e-12

HARD_PINS = [ss.HardPin(0, value=[1.0, -1.0]), ss.HardPin(3, coords=[1], value=0.5)]
SOFT_PINS = [ss.SoftPin(2, coords=[0], value=0.3, gamma=2.0), ss.SoftPin(4, value=-0.2)]


def chorded_cycle_sheaf() -> ss.CellularSheaf:
    """Return an orthogonal sheaf on a 5-cycle with the chord 0-2."""
    graph = nx.cycle_graph(5)
    graph.add_edge(0, 2)
    return ss.random_orthogonal_sheaf(graph, dim=2, seed=1)


def random_state(sheaf: ss.CellularSheaf, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {v: rng.normal(size=(sheaf.stalk_dim(v), batch)) for v in sheaf.vertices}


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
    assert actors.max_update == pytest.approx(reference.max_update, rel=1e-12)
    assert len(actors.max_change_history) == actors.steps
    assert actors.output is None


@pytest.mark.parametrize("integrator", ["euler", "nesterov"])
@pytest.mark.parametrize(
    "pins", [{"pins": HARD_PINS}, {"soft_pins": SOFT_PINS}], ids=["hard", "soft"]
)
def test_sync_matches_diffuse_sheaf(integrator, pins):
    sheaf = chorded_cycle_sheaf()
    state = random_state(sheaf, batch=3)
    kwargs = {"dt": 0.2, "tol": 1e-4, "integrator": integrator, **pins}

    reference = ss.diffuse_sheaf(sheaf, state, **kwargs)
    actors = diffuse_sheaf_on_actors(sheaf, state, timeout_s=120.0, **kwargs)

    assert reference.status == "converged"
    assert_same_run(actors, reference)
    assert actors.n_actors == len(sheaf.vertices) + 1
    assert actors.schedule == "sync"
    assert actors.integrator == integrator
    assert set(actors.vertex_stats) == {str(v) for v in sheaf.vertices}


def test_sync_energy_trace_matches():
    sheaf = chorded_cycle_sheaf()
    state = random_state(sheaf, batch=2, seed=5)
    kwargs = {"dt": 0.2, "pins": HARD_PINS, "soft_pins": SOFT_PINS}

    actors = diffuse_sheaf_on_actors(
        sheaf, state, tol=1e-300, max_steps=30, report_every=5, **kwargs
    )
    steps = actors.energy_trace["step"]
    # With Euler the energy of energy step s is that of the state after step s.
    reference = ss.diffuse_sheaf(
        sheaf, state, tol=1e-300, max_steps=30, record_at=steps, **kwargs
    )

    assert actors.status == reference.status == "max_steps"
    assert steps == [4, 9, 14, 19, 24, 29]
    recorded = dict(
        zip(reference.trace["step"], reference.trace["energy"], strict=True)
    )
    expected = [recorded[step] for step in steps]
    # The coordinator adds the edge terms in arrival order, and the discord is
    # a batch mean in process, so only rounding differs.
    np.testing.assert_allclose(actors.energy_trace["energy"], expected, rtol=1e-12)


def test_sparse_isolated_tuple_vertices():
    graph = nx.grid_2d_graph(2, 2)
    graph.add_nodes_from(["drifting", "still"])
    dims = {(0, 0): 2, (0, 1): 3, (1, 0): 2, (1, 1): 3, "drifting": 2, "still": 1}
    rng = np.random.default_rng(2)
    maps = {}
    for edge in graph.edges:
        for vertex in edge:
            # Two rows of an orthogonal matrix keep lambda_min of the free
            # Laplacian near 0.14, so the run takes about 100 steps.
            rows = ortho_group.rvs(dims[vertex], random_state=rng)[:2]
            rows[np.abs(rows) < 0.3] = 0.0
            maps[(edge, vertex)] = sp.csr_array(rows)
    sheaf = ss.CellularSheaf(graph, dims, maps)
    state = random_state(sheaf, batch=2, seed=3)
    kwargs = {
        "dt": 0.3,
        "tol": 1e-3,
        "pins": [ss.HardPin((0, 0), value=[1.0, 2.0])],
        "soft_pins": [
            ss.SoftPin("drifting", value=0.5, gamma=4.0),
            ss.SoftPin((1, 1), coords=[2], value=0.0),
        ],
    }

    reference = ss.diffuse_sheaf(sheaf, state, **kwargs)
    actors = diffuse_sheaf_on_actors(sheaf, state, timeout_s=120.0, **kwargs)

    assert reference.status == "converged"
    assert_same_run(actors, reference)
    np.testing.assert_array_equal(actors.state["still"], state["still"])
    np.testing.assert_array_equal(actors.state[(0, 0)], [[1.0, 1.0], [2.0, 2.0]])
    stats = actors.vertex_stats
    # Fully pinned and isolated unpinned vertices are static and take no steps.
    assert stats["(0, 0)"]["steps"] == 0
    assert stats["still"]["steps"] == 0
    # With no neighbour to wait for, "drifting" runs ahead up to the default
    # window of 2 * report_every steps past the stopping step.
    assert actors.steps <= stats["drifting"]["steps"] <= actors.steps + 20
    reported = {edge for row in actors.reports for edge in row.energy}
    edge_names = {"(0, 0)-(0, 1)", "(0, 0)-(1, 0)", "(0, 1)-(1, 1)", "(1, 0)-(1, 1)"}
    assert edge_names <= reported


def pinned_cycle_case():
    """Return an orthogonal sheaf on a 6-cycle, its boundary and a start."""
    sheaf = ss.random_orthogonal_sheaf(nx.cycle_graph(6), dim=2, seed=3)
    boundary = {
        0: np.array([[1.0, 0.0], [-1.0, 0.5]]),
        3: np.array([[0.5, 0.2], [0.5, -0.3]]),
    }
    return sheaf, boundary, random_state(sheaf, batch=2)


def harmonic_error_bound(sheaf, boundary, tol, step_size):
    """Return a bound on max |x - x*| at a state whose Euler changes are < tol.

    A converged asynchronous run ends after a quiescence round in which every
    vertex, holding its neighbours' current values, would move by less than
    ``tol``. For Euler that is ``step_size * max|f| < tol`` with the free
    force ``f = -L_ff (x - x*)``. So each sample column satisfies
    ``|x - x*|_2 <= |f|_2 / lambda_min(L_ff) < sqrt(n_free) tol /
    (step_size lambda_min)``, and the max norm is at most the 2-norm.
    """
    free_block, _ = sheaf.restricted_laplacian(dict.fromkeys(boundary))
    lambda_min = np.linalg.eigvalsh(free_block.toarray())[0]
    return np.sqrt(free_block.shape[0]) * tol / (step_size * lambda_min)


@pytest.mark.parametrize(
    "options",
    [
        {
            "staleness_bound": 2,
            "delays": DelayModel(
                compute_s=0.0005, message_s=0.002, jitter=0.9, seed=11
            ),
        },
        {
            "delays": DelayModel(
                compute_s=0.0005, message_s=0.001, slowdown={1: 4.0}, seed=7
            )
        },
    ],
    ids=["staleness_bound", "delays"],
)
def test_async_reaches_harmonic_extension(options):
    sheaf, boundary, state = pinned_cycle_case()
    pins = [ss.HardPin(v, value=value) for v, value in boundary.items()]
    dt, tol = 0.5, 1e-6
    exact = sheaf.harmonic_extension(boundary)

    result = diffuse_sheaf_on_actors(
        sheaf,
        state,
        dt=dt,
        tol=tol,
        pins=pins,
        schedule="async",
        timeout_s=120.0,
        **options,
    )

    assert result.status == "converged", result.message
    bound = harmonic_error_bound(sheaf, boundary, tol, dt)
    for vertex in sheaf.vertices:
        error = float(np.max(np.abs(result.state[vertex] - exact[vertex])))
        assert error < bound, f"vertex {vertex} is {error} from the extension"
    staleness = {v: s["max_staleness"] for v, s in result.vertex_stats.items()}
    assert max(staleness.values()) >= 1
    if "staleness_bound" in options:
        assert max(staleness.values()) <= options["staleness_bound"]


def state_dependent_sheaf() -> ss.CellularSheaf:
    graph = nx.path_graph(3)
    maps = {
        ((0, 1), 0): np.eye(2),
        ((0, 1), 1): lambda x: np.diag(np.tanh(x) + 2.0),
        ((1, 2), 1): np.eye(2),
        ((1, 2), 2): np.eye(2),
    }
    return ss.sheaf_from_maps(graph, maps, stalk_dims={1: 2})


def sheaf_on(graph: nx.Graph) -> ss.CellularSheaf:
    return ss.constant_sheaf(graph)


def test_state_dependent_maps_rejected():
    sheaf = state_dependent_sheaf()
    state = {v: np.zeros(2) for v in sheaf.vertices}

    with pytest.raises(
        InvalidValueError, match=r"edge \(0, 1\) at vertex 1 is a callable"
    ) as caught:
        diffuse_sheaf_on_actors(sheaf, state)

    assert "sheafsim.diffuse_sheaf" in str(caught.value)


def test_string_name_collision_rejected():
    sheaf = sheaf_on(nx.Graph([(1, "1"), ("1", 2)]))
    state = {v: np.zeros(1) for v in sheaf.vertices}

    with pytest.raises(
        InvalidValueError, match=r"vertices \[1, '1'\] all have the name '1'"
    ) as caught:
        diffuse_sheaf_on_actors(sheaf, state)

    assert "relabel_nodes" in str(caught.value)


def test_vertex_named_coordinator_rejected():
    sheaf = sheaf_on(nx.Graph([("coordinator", "v")]))
    state = {v: np.zeros(1) for v in sheaf.vertices}

    with pytest.raises(InvalidValueError, match="reserves for the coordinator"):
        diffuse_sheaf_on_actors(sheaf, state)


def test_edge_names_colliding_rejected():
    sheaf = sheaf_on(nx.Graph([("a", "b-c"), ("a-b", "c")]))
    state = {v: np.zeros(1) for v in sheaf.vertices}

    with pytest.raises(InvalidValueError, match="all have the name 'a-b-c'"):
        diffuse_sheaf_on_actors(sheaf, state)


def test_non_sheaf_rejected():
    net = ss.NeuralSheaf.random([2, 3, 1], seed=0)

    with pytest.raises(InvalidValueError, match="must be a CellularSheaf"):
        diffuse_sheaf_on_actors(net, {})  # type: ignore[arg-type]


ZEROS = {v: np.zeros((2, 3)) for v in range(5)}
INVALID_ARGUMENTS = [
    ({"schedule": "gossip"}, InvalidValueError, "unknown schedule 'gossip'"),
    ({"integrator": "heavy_ball"}, InvalidValueError, "not supported on actors"),
    ({"integrator": "rk4"}, InvalidValueError, "unknown integrator 'rk4'"),
    ({"alpha": -1.0}, InvalidValueError, "alpha=-1.0 is invalid"),
    ({"tol": 0.0}, InvalidValueError, "tol=0.0 is invalid"),
    ({"min_steps": 2.5}, InvalidValueError, "min_steps=2.5 is invalid"),
    ({"max_steps": 0}, InvalidValueError, "max_steps=0 and min_steps=5"),
    ({"report_every": 0}, InvalidValueError, "report_every=0 must be >= 1"),
    ({"window": 3}, InvalidValueError, "window=3 is smaller than report_every"),
    ({"staleness_bound": 1}, InvalidValueError, "applies only to schedule='async'"),
    (
        {"schedule": "async", "staleness_bound": -1},
        InvalidValueError,
        "staleness_bound=-1 is invalid",
    ),
    ({"delays": {"compute_s": 0.1}}, InvalidValueError, "must be a DelayModel"),
    (
        {"delays": DelayModel(slowdown={"0": 2.0})},
        InvalidValueError,
        r"unknown vertices \['0'\]",
    ),
    ({"timeout_s": 0}, InvalidValueError, "timeout_s=0.0 is invalid"),
    ({"inject_fault": (9, 3)}, InvalidValueError, "inject_fault names vertex 9"),
    (
        {"inject_fault": (0, 3), "pins": [ss.HardPin(0)]},
        InvalidValueError,
        "vertex 0, which takes no steps",
    ),
    (
        {"state": {0: np.zeros(2)}},
        InvalidValueError,
        r"missing vertices \[1, 2, 3, 4\]",
    ),
    (
        {"state": {**ZEROS, 2: np.zeros((3, 3))}},
        InvalidValueError,
        r"initial state of 2 has shape \(3, 3\) but stalk 2 has dimension 2",
    ),
    (
        {"state": {**ZEROS, 2: np.zeros((2, 4))}},
        InvalidValueError,
        "mixes batch sizes",
    ),
    (
        {"state": {**ZEROS, 1: np.full((2, 3), np.nan)}},
        InvalidValueError,
        "initial state of 1 contains NaN",
    ),
    ({"pins": [ss.HardPin(7)]}, InvalidValueError, "cannot pin vertex 7"),
    ({"dt": 5.0}, StepSizeError, "too large for the euler integrator"),
    (
        {"dt": 0.7, "integrator": "nesterov"},
        StepSizeError,
        "too large for the nesterov integrator",
    ),
]


@pytest.mark.parametrize(("arguments", "error", "message"), INVALID_ARGUMENTS)
def test_invalid_arguments_rejected(arguments, error, message):
    sheaf = chorded_cycle_sheaf()
    arguments = dict(arguments)
    state = arguments.pop("state", ZEROS)

    with pytest.raises(error, match=message):
        diffuse_sheaf_on_actors(sheaf, state, **arguments)
