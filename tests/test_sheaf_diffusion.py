import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

import sheafsim as ss


def dirichlet_solution(graph, pinned_values):
    """Direct solve of the graph Dirichlet problem with networkx's Laplacian."""
    nodes = list(graph.nodes)
    laplacian = sp.csr_array(nx.laplacian_matrix(graph, nodelist=nodes))
    pinned = [nodes.index(v) for v in pinned_values]
    free = [i for i in range(len(nodes)) if i not in pinned]
    values = np.array([pinned_values[nodes[i]] for i in pinned])
    rhs = -(laplacian[free][:, pinned] @ values)
    solution = spsolve(sp.csc_array(laplacian[free][:, free]), rhs)
    return {nodes[i]: solution[k] for k, i in enumerate(free)}


@pytest.mark.parametrize(
    "graph",
    [nx.grid_2d_graph(5, 4), nx.petersen_graph(), nx.gnp_random_graph(30, 0.2, seed=3)],
    ids=["grid", "petersen", "gnp"],
)
def test_constant_sheaf_pinned_diffusion(graph):
    graph = nx.convert_node_labels_to_integers(graph)
    sheaf = ss.constant_sheaf(graph)
    nodes = list(graph.nodes)
    pinned_values = {nodes[0]: 1.0, nodes[-1]: -2.0, nodes[len(nodes) // 2]: 0.5}
    pins = [ss.HardPin(v, value=value) for v, value in pinned_values.items()]
    rng = np.random.default_rng(0)
    state = {v: rng.normal(size=1) for v in nodes}
    result = ss.diffuse_sheaf(sheaf, state, pins=pins, dt=0.05, tol=1e-12)
    assert result.converged
    expected = dirichlet_solution(graph, pinned_values)
    for vertex, value in expected.items():
        assert result.state[vertex][0, 0] == pytest.approx(value, abs=1e-9)


def test_connection_sheaf_reaches_harmonic_extension():
    graph = nx.cycle_graph(8)
    sheaf = ss.random_orthogonal_sheaf(graph, dim=3, seed=4)
    boundary = {0: np.array([1.0, 0.0, -1.0]), 4: np.array([0.5, 0.5, 0.5])}
    expected = sheaf.harmonic_extension(boundary)
    rng = np.random.default_rng(1)
    state = {v: rng.normal(size=3) for v in graph.nodes}
    pins = [ss.HardPin(v, value=value) for v, value in boundary.items()]
    for integrator in ("euler", "nesterov"):
        result = ss.diffuse_sheaf(
            sheaf, state, pins=pins, dt=0.1, tol=1e-12, integrator=integrator
        )
        assert result.converged
        for v in graph.nodes:
            np.testing.assert_allclose(result.state[v][:, 0], expected[v], atol=1e-9)


def test_sheaf_diffusion_energy_decreases():
    graph = nx.path_graph(6)
    sheaf = ss.random_orthogonal_sheaf(graph, dim=2, seed=0)
    state = {v: np.random.default_rng(v).normal(size=(2, 3)) for v in graph.nodes}
    result = ss.diffuse_sheaf(sheaf, state, dt=0.1, max_steps=50, record_every=5)
    assert np.all(np.diff(result.trace["energy"]) <= 1e-15)
    assert "0-1" in result.trace


def test_sheaf_step_size_rejected():
    sheaf = ss.constant_sheaf(nx.complete_graph(6))
    state = {v: np.zeros(1) for v in range(6)}
    with pytest.raises(ss.StepSizeError, match="lambda_max = 6"):
        ss.diffuse_sheaf(sheaf, state, dt=1.0)


def test_sheaf_missing_vertex_state():
    sheaf = ss.constant_sheaf(nx.path_graph(3))
    with pytest.raises(ss.InvalidValueError, match=r"missing vertices \[2\]"):
        ss.diffuse_sheaf(sheaf, {0: np.zeros(1), 1: np.zeros(1)})


def test_sheaf_state_shape_rejected():
    sheaf = ss.constant_sheaf(nx.path_graph(2), dim=2)
    with pytest.raises(ss.InvalidValueError, match=r"initial state of 1 has shape"):
        ss.diffuse_sheaf(sheaf, {0: np.zeros(2), 1: np.zeros(3)})


def test_sheaf_nan_state_rejected():
    sheaf = ss.constant_sheaf(nx.path_graph(2))
    with pytest.raises(ss.InvalidValueError, match="initial state of 0 contains NaN"):
        ss.diffuse_sheaf(sheaf, {0: np.array([np.nan]), 1: np.zeros(1)})


def test_sheaf_mixed_batches_rejected():
    sheaf = ss.constant_sheaf(nx.path_graph(2))
    with pytest.raises(ss.InvalidValueError, match="mixes batch sizes"):
        ss.diffuse_sheaf(sheaf, {0: np.zeros((1, 2)), 1: np.zeros((1, 3))})


def test_multigraph_rejected():
    with pytest.raises(ss.InvalidValueError, match="without parallel edges"):
        ss.constant_sheaf(nx.MultiGraph([(0, 1), (0, 1)]))
