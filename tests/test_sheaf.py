"""Tests of sheafsim.sheaf: operators, cohomology, harmonic extension, validation."""

from __future__ import annotations

import re

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from sheafsim.errors import InvalidValueError, ShapeError
from sheafsim.sheaf import (
    CellularSheaf,
    constant_sheaf,
    random_orthogonal_sheaf,
    sheaf_from_maps,
)

GRAPHS = {
    "path": nx.path_graph(6),
    "cycle": nx.cycle_graph(7),
    "petersen": nx.petersen_graph(),
    "gnp": nx.gnp_random_graph(12, 0.3, seed=4),
    "directed": nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]),
}


def relu_mask(z: np.ndarray) -> np.ndarray:
    return np.diag((z >= 0).astype(float))


def mixed_sheaf() -> CellularSheaf:
    """Sheaf with stalks of dimension 1, 2 and 3 and non-square maps."""
    rng = np.random.default_rng(7)
    graph = nx.Graph([("a", "b"), ("b", "c"), ("a", "c")])
    dims = {"a": 1, "b": 2, "c": 3}
    edge_dims = {("a", "b"): 2, ("b", "c"): 1, ("a", "c"): 3}
    maps = {
        (edge, vertex): rng.normal(size=(edge_dims[edge], dims[vertex]))
        for edge in graph.edges
        for vertex in edge
    }
    return CellularSheaf(graph, dims, maps)


def tiny_graph() -> nx.Graph:
    return nx.Graph([("z1", "a1")])


def flatten(sheaf: CellularSheaf, blocks: dict) -> np.ndarray:
    return np.concatenate([blocks[v] for v in sheaf.vertices])


# ------------------------------------------------------------ Laplacian


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_constant_sheaf_laplacian_matches_networkx(name, dim):
    graph = GRAPHS[name]
    sheaf = constant_sheaf(graph, dim)
    undirected = graph.to_undirected()
    expected = nx.laplacian_matrix(undirected, nodelist=list(graph.nodes)).toarray()
    expected = np.kron(expected, np.eye(dim))
    np.testing.assert_allclose(sheaf.laplacian().toarray(), expected)


@pytest.mark.parametrize("name", ["cycle", "petersen", "gnp"])
def test_laplacian_equals_coboundary_gram(name):
    sheaf = random_orthogonal_sheaf(GRAPHS[name], 3, seed=1)
    delta = sheaf.coboundary().toarray()
    np.testing.assert_allclose(sheaf.laplacian().toarray(), delta.T @ delta, atol=1e-12)


def test_operator_shapes_and_types():
    sheaf = mixed_sheaf()
    delta = sheaf.coboundary()
    assert isinstance(delta, sp.csr_array)
    assert delta.shape == (6, 6)
    assert isinstance(sheaf.laplacian(), sp.csr_array)


def test_laplacian_blocks_match_formula():
    sheaf = mixed_sheaf()
    laplacian = sheaf.laplacian().toarray()
    for vertex in sheaf.vertices:
        block = laplacian[sheaf.vertex_slice(vertex), sheaf.vertex_slice(vertex)]
        expected = sum(
            sheaf.restriction(edge, vertex).T @ sheaf.restriction(edge, vertex)
            for edge in sheaf.edges
            if vertex in edge
        )
        np.testing.assert_allclose(block, expected)
    for u, v in sheaf.edges:
        block = laplacian[sheaf.vertex_slice(u), sheaf.vertex_slice(v)]
        expected = -sheaf.restriction((u, v), u).T @ sheaf.restriction((u, v), v)
        np.testing.assert_allclose(block, expected)


def test_edge_residuals_follow_orientation():
    sheaf = mixed_sheaf()
    x = {"a": np.array([1.0]), "b": np.array([2.0, -1.0]), "c": np.ones(3)}
    residuals = sheaf.edge_residuals(x)
    for u, v in sheaf.edges:
        expected = sheaf.restriction((u, v), v) @ x[v]
        expected = expected - sheaf.restriction((u, v), u) @ x[u]
        np.testing.assert_allclose(residuals[(u, v)][:, 0], expected)


def test_coboundary_rows_match_edge_residuals():
    sheaf = mixed_sheaf()
    x = np.arange(sheaf.total_dim, dtype=float)
    delta_x = sheaf.coboundary() @ x
    residuals = sheaf.edge_residuals(x)
    for edge in sheaf.edges:
        np.testing.assert_allclose(
            delta_x[sheaf.edge_slice(edge)], residuals[edge][:, 0]
        )


# ------------------------------------------------ energy, forces, discord


@pytest.fixture
def orthogonal_batch():
    sheaf = random_orthogonal_sheaf(nx.petersen_graph(), 2, seed=3)
    x = np.random.default_rng(5).normal(size=(sheaf.total_dim, 3))
    return sheaf, x


def test_energy_equals_half_quadratic_form(orthogonal_batch):
    sheaf, x = orthogonal_batch
    laplacian = sheaf.laplacian().toarray()
    expected = 0.5 * np.einsum("ib,ij,jb->b", x, laplacian, x)
    energy = sheaf.energy(x)
    assert energy.shape == (3,)
    np.testing.assert_allclose(energy, expected)


def test_energy_of_one_sample_is_float(orthogonal_batch):
    sheaf, x = orthogonal_batch
    energy = sheaf.energy(x[:, 0])
    assert isinstance(energy, float)
    assert energy == pytest.approx(sheaf.energy(x)[0])


def test_local_forces_equal_minus_laplacian(orthogonal_batch):
    sheaf, x = orthogonal_batch
    forces = sheaf.local_forces(x)
    expected = -(sheaf.laplacian() @ x)
    for vertex in sheaf.vertices:
        assert forces[vertex].shape == (2, 3)
        np.testing.assert_allclose(forces[vertex], expected[sheaf.vertex_slice(vertex)])


def test_local_forces_on_mixed_stalks():
    sheaf = mixed_sheaf()
    x = np.random.default_rng(2).normal(size=(sheaf.total_dim, 3))
    forces = flatten(sheaf, sheaf.local_forces(x))
    np.testing.assert_allclose(forces, -(sheaf.laplacian() @ x))


def test_dict_cochain_matches_flat(orthogonal_batch):
    sheaf, x = orthogonal_batch
    blocks = {v: x[sheaf.vertex_slice(v)] for v in sheaf.vertices}
    np.testing.assert_allclose(sheaf.energy(blocks), sheaf.energy(x))


def test_discord_is_batch_mean_of_squared_norm(orthogonal_batch):
    sheaf, x = orthogonal_batch
    residuals = sheaf.edge_residuals(x)
    discord = sheaf.discord(x)
    for edge in sheaf.edges:
        expected = np.mean(np.sum(residuals[edge] ** 2, axis=0))
        assert discord[edge] == pytest.approx(expected)


def test_discord_sums_to_twice_mean_energy(orthogonal_batch):
    sheaf, x = orthogonal_batch
    total = sum(sheaf.discord(x).values())
    assert total == pytest.approx(2 * np.mean(sheaf.energy(x)))


# ------------------------------------------------------------ cohomology


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("name", ["path", "cycle", "petersen", "directed"])
def test_h0_of_constant_sheaf_on_connected_graph(name, dim):
    assert constant_sheaf(GRAPHS[name], dim).h0_dimension() == dim


@pytest.mark.parametrize("dim", [1, 2])
def test_h0_of_constant_sheaf_on_two_components(dim):
    graph = nx.disjoint_union(nx.cycle_graph(4), nx.path_graph(3))
    assert constant_sheaf(graph, dim).h0_dimension() == 2 * dim


def test_h0_without_edges_is_total_dim():
    assert constant_sheaf(nx.empty_graph(3), 2).h0_dimension() == 6


# Seeds 0 to 2 give a reflection holonomy (H0 of dimension 1), seeds 3 to 5 a rotation.
@pytest.mark.parametrize("seed", range(6))
def test_h0_orthogonal_cycle_matches_eigenvalues(seed):
    sheaf = random_orthogonal_sheaf(nx.cycle_graph(6), 2, seed=seed)
    eigenvalues = np.linalg.eigvalsh(sheaf.laplacian().toarray())
    assert sheaf.h0_dimension() == int(np.sum(eigenvalues < 1e-9))


def test_h0_of_orthogonal_sheaf_on_tree_is_dim():
    sheaf = random_orthogonal_sheaf(nx.balanced_tree(2, 3), 3, seed=8)
    assert sheaf.h0_dimension() == 3


@pytest.mark.parametrize("dim", [1, 2])
def test_relative_h0_is_zero_with_one_pinned_vertex(dim):
    sheaf = constant_sheaf(nx.petersen_graph(), dim)
    assert sheaf.relative_h0_dimension({0: None}) == 0


def test_relative_h0_counts_unpinned_coordinates():
    sheaf = constant_sheaf(nx.path_graph(4), 3)
    assert sheaf.relative_h0_dimension({2: [0]}) == 2


def test_relative_h0_with_empty_boundary_equals_h0():
    sheaf = constant_sheaf(GRAPHS["gnp"], 2)
    assert sheaf.relative_h0_dimension({}) == sheaf.h0_dimension()


def test_h0_rejects_large_sheaf():
    sheaf = constant_sheaf(nx.path_graph(2001))
    with pytest.raises(InvalidValueError, match="small sheaves: total_dim is 2001"):
        sheaf.h0_dimension()


def test_relative_h0_rejects_large_sheaf():
    sheaf = constant_sheaf(nx.path_graph(1001), 2)
    with pytest.raises(InvalidValueError, match="limit is 2000"):
        sheaf.relative_h0_dimension({0: None})


# ---------------------------------------------------------- boundaries


def test_split_coordinates_orders_flat_indices():
    sheaf = constant_sheaf(nx.path_graph(3), 2)
    free, pinned = sheaf.split_coordinates({0: None, 2: [1]})
    np.testing.assert_array_equal(free, [2, 3, 4])
    np.testing.assert_array_equal(pinned, [0, 1, 5])


def test_restricted_laplacian_blocks():
    sheaf = mixed_sheaf()
    boundary = {"a": None, "c": [0, 2]}
    free, pinned = sheaf.split_coordinates(boundary)
    free_block, coupling = sheaf.restricted_laplacian(boundary)
    laplacian = sheaf.laplacian().toarray()
    np.testing.assert_allclose(free_block.toarray(), laplacian[np.ix_(free, free)])
    np.testing.assert_allclose(coupling.toarray(), laplacian[np.ix_(free, pinned)])


# --------------------------------------------------- harmonic extension


def test_harmonic_extension_matches_dirichlet_solve():
    graph = GRAPHS["gnp"]
    sheaf = constant_sheaf(graph)
    nodes = list(graph.nodes)
    boundary_nodes = [0, 5, 9]
    values = np.random.default_rng(0).normal(size=(3, 4))
    laplacian = nx.laplacian_matrix(graph, nodelist=nodes).toarray().astype(float)
    pinned = [nodes.index(v) for v in boundary_nodes]
    free = [i for i in range(len(nodes)) if i not in pinned]
    expected = np.linalg.solve(
        laplacian[np.ix_(free, free)], -laplacian[np.ix_(free, pinned)] @ values
    )
    result = sheaf.harmonic_extension(
        {v: values[k : k + 1] for k, v in enumerate(boundary_nodes)}
    )
    for row, index in enumerate(free):
        np.testing.assert_allclose(result[nodes[index]][0], expected[row])


def test_harmonic_extension_interpolates_path_linearly():
    sheaf = constant_sheaf(nx.path_graph(7))
    result = sheaf.harmonic_extension({0: [[1.0, 2.0]], 6: [[7.0, -4.0]]})
    interpolated = np.linspace([1.0, 2.0], [7.0, -4.0], 7)
    for vertex in range(7):
        np.testing.assert_allclose(result[vertex][0], interpolated[vertex], atol=1e-12)


def test_harmonic_extension_balances_free_forces():
    sheaf = random_orthogonal_sheaf(nx.petersen_graph(), 2, seed=4)
    values = np.random.default_rng(1).normal(size=(2, 5))
    pinned = [0, 3, 7]
    result = sheaf.harmonic_extension({v: values for v in pinned})
    forces = sheaf.local_forces(result)
    for vertex in sheaf.vertices:
        if vertex not in pinned:
            np.testing.assert_allclose(forces[vertex], 0.0, atol=1e-10)


def test_harmonic_extension_keeps_boundary_values():
    sheaf = random_orthogonal_sheaf(nx.cycle_graph(5), 2, seed=4)
    result = sheaf.harmonic_extension({1: np.array([0.5, -2.0])})
    np.testing.assert_array_equal(result[1], [0.5, -2.0])


def test_harmonic_extension_returns_1d_for_1d_values():
    sheaf = constant_sheaf(nx.path_graph(4), 2)
    result = sheaf.harmonic_extension({0: np.zeros(2), 3: np.ones(2)})
    assert result[1].shape == (2,)


def test_harmonic_extension_returns_batch_for_2d_values():
    sheaf = constant_sheaf(nx.path_graph(4), 2)
    result = sheaf.harmonic_extension({0: np.zeros((2, 3)), 3: np.ones((2, 3))})
    assert result[1].shape == (2, 3)


def test_harmonic_extension_with_coordinate_tuple():
    sheaf = constant_sheaf(nx.path_graph(5), 2)
    result = sheaf.harmonic_extension({0: np.array([0.0, 3.0]), 4: ([0], [8.0])})
    np.testing.assert_allclose(result[2], [4.0, 3.0])
    np.testing.assert_allclose(result[4], [8.0, 3.0])


def test_harmonic_extension_without_boundary():
    # With seed 3 the holonomy around the cycle is a rotation without fixed vectors.
    sheaf = random_orthogonal_sheaf(nx.cycle_graph(6), 2, seed=3)
    assert sheaf.h0_dimension() == 0
    result = sheaf.harmonic_extension({})
    np.testing.assert_allclose(flatten(sheaf, result), 0.0)


def test_harmonic_extension_rejects_exactly_singular_system():
    sheaf = constant_sheaf(nx.cycle_graph(5))
    with pytest.raises(InvalidValueError, match="not unique.*Pin more vertices"):
        sheaf.harmonic_extension({})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_harmonic_extension_rejects_numerically_singular_system(seed):
    sheaf = random_orthogonal_sheaf(nx.balanced_tree(2, 3), 3, seed=seed)
    with pytest.raises(InvalidValueError, match="not unique"):
        sheaf.harmonic_extension({})


def test_harmonic_extension_rejects_partial_pin():
    sheaf = constant_sheaf(nx.path_graph(3), 2)
    with pytest.raises(InvalidValueError, match="not unique"):
        sheaf.harmonic_extension({0: ([0], [1.0])})


def test_harmonic_extension_rejects_mixed_batches():
    sheaf = constant_sheaf(nx.path_graph(3))
    with pytest.raises(ShapeError, match="mixes batch shapes"):
        sheaf.harmonic_extension({0: [1.0], 2: [[1.0, 2.0]]})


def test_harmonic_extension_rejects_nan_values():
    sheaf = constant_sheaf(nx.path_graph(3))
    with pytest.raises(InvalidValueError, match=r"boundary_values\[0\] contains NaN"):
        sheaf.harmonic_extension({0: [np.nan]})


def test_harmonic_extension_rejects_wrong_value_length():
    sheaf = constant_sheaf(nx.path_graph(3), 2)
    with pytest.raises(ShapeError, match=r"expected \(2,\) or \(2, batch\)"):
        sheaf.harmonic_extension({0: [1.0, 2.0, 3.0]})


def test_harmonic_extension_rejects_repeated_coordinate():
    sheaf = constant_sheaf(nx.path_graph(3), 2)
    with pytest.raises(InvalidValueError, match="repeats a coordinate"):
        sheaf.harmonic_extension({0: ([1, 1], [1.0, 2.0])})


# ------------------------------------------------- state-dependent maps


@pytest.fixture
def relu_sheaf():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): relu_mask, (("a", "b"), "b"): np.eye(2)}
    return CellularSheaf(graph, {"a": 2, "b": 2}, maps)


def test_relu_map_is_evaluated_per_column(relu_sheaf):
    xa = np.array([[1.0, -1.0, 2.0], [-3.0, 4.0, 0.5]])
    xb = np.zeros((2, 3))
    residual = relu_sheaf.edge_residuals({"a": xa, "b": xb})[("a", "b")]
    np.testing.assert_allclose(residual, xb - np.maximum(xa, 0.0))


def test_relu_forces_match_state_laplacian(relu_sheaf):
    x = np.array([[1.0, -2.0], [-1.0, 3.0], [0.5, 0.5], [2.0, -1.0]])
    forces = flatten(relu_sheaf, relu_sheaf.local_forces(x))
    for column in range(2):
        laplacian = relu_sheaf.laplacian(state=x[:, column])
        expected = -(laplacian @ x[:, column])
        np.testing.assert_allclose(forces[:, column], expected)


def test_relu_restriction_uses_state(relu_sheaf):
    state = {"a": np.array([1.0, -1.0]), "b": np.zeros(2)}
    mask = relu_sheaf.restriction(("a", "b"), "a", state)
    np.testing.assert_array_equal(mask, np.diag([1.0, 0.0]))


def test_state_dependent_sheaf_is_flagged(relu_sheaf):
    assert relu_sheaf.is_state_dependent


def test_relu_restriction_requires_state(relu_sheaf):
    with pytest.raises(InvalidValueError, match="depends on the state"):
        relu_sheaf.restriction(("a", "b"), "a")


def test_relu_coboundary_requires_state(relu_sheaf):
    with pytest.raises(InvalidValueError, match="Pass state with a value for 'a'"):
        relu_sheaf.coboundary()


def test_relu_coboundary_rejects_batched_state(relu_sheaf):
    with pytest.raises(ShapeError, match="evaluated at one sample"):
        relu_sheaf.coboundary(np.zeros((4, 2)))


def test_callable_returning_wrong_shape_raises():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): lambda z: np.eye(3), (("a", "b"), "b"): np.eye(2)}
    sheaf = CellularSheaf(graph, {"a": 2, "b": 2}, maps)
    with pytest.raises(ShapeError, match=r"has shape \(3, 3\) but stalk 'a'"):
        sheaf.energy(np.ones(4))


def test_two_callables_need_edge_dims():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): relu_mask, (("a", "b"), "b"): relu_mask}
    with pytest.raises(InvalidValueError, match=r"Pass edge_dims\[\('a', 'b'\)\]"):
        CellularSheaf(graph, {"a": 2, "b": 2}, maps)


def test_two_callables_with_edge_dims():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): relu_mask, (("a", "b"), "b"): relu_mask}
    sheaf = CellularSheaf(graph, {"a": 2, "b": 2}, maps, edge_dims={("b", "a"): 2})
    assert sheaf.edge_dim(("a", "b")) == 2


# ------------------------------------------------------ structure access


def test_coordinates_follow_node_order():
    sheaf = mixed_sheaf()
    assert sheaf.vertices == ["a", "b", "c"]
    assert sheaf.vertex_slice("c") == slice(3, 6)
    assert sheaf.total_dim == 6


def test_reversed_edge_is_normalised():
    sheaf = mixed_sheaf()
    assert sheaf.edge_dim(("b", "a")) == 2
    np.testing.assert_array_equal(
        sheaf.restriction(("b", "a"), "a"), sheaf.restriction(("a", "b"), "a")
    )


def test_maps_keyed_by_reversed_edge_are_accepted():
    graph = tiny_graph()
    maps = {(("a1", "z1"), "a1"): np.ones((1, 2)), (("a1", "z1"), "z1"): np.eye(1)}
    sheaf = CellularSheaf(graph, {"z1": 1, "a1": 2}, maps)
    assert sheaf.edges == [("z1", "a1")]


def test_directed_graph_rejects_reversed_edge():
    sheaf = constant_sheaf(GRAPHS["directed"])
    with pytest.raises(InvalidValueError, match=r"edge \('b', 'a'\) is not an edge"):
        sheaf.edge_dim(("b", "a"))


def test_sparse_maps_are_accepted():
    graph = tiny_graph()
    maps = {
        (("z1", "a1"), "z1"): sp.csr_matrix(np.eye(2)),
        (("z1", "a1"), "a1"): sp.csr_array(np.array([[1.0, 0.0, 2.0], [0, 1, 0]])),
    }
    sheaf = CellularSheaf(graph, {"z1": 2, "a1": 3}, maps)
    x = np.arange(5.0)
    np.testing.assert_allclose(sheaf.edge_residuals(x)[("z1", "a1")][:, 0], [10, 2])


def test_fixed_maps_are_read_only():
    sheaf = mixed_sheaf()
    with pytest.raises(ValueError, match="read-only"):
        sheaf.restriction(("a", "b"), "a")[0, 0] = 1.0


# ---------------------------------------------------------- constructors


def test_sheaf_from_maps_infers_stalk_dims():
    graph = tiny_graph()
    maps = {
        (("z1", "a1"), "z1"): np.ones((4, 2)),
        (("z1", "a1"), "a1"): np.ones((4, 3)),
    }
    sheaf = sheaf_from_maps(graph, maps)
    assert sheaf.stalk_dim("a1") == 3
    assert sheaf.edge_dim(("z1", "a1")) == 4


def test_sheaf_from_maps_uses_given_dims_for_callables():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): relu_mask, (("a", "b"), "b"): np.eye(2)}
    sheaf = sheaf_from_maps(graph, maps, stalk_dims={"a": 2})
    assert sheaf.stalk_dim("a") == 2


def test_sheaf_from_maps_rejects_uninferable_vertex():
    graph = nx.Graph([("a", "b")])
    maps = {(("a", "b"), "a"): relu_mask, (("a", "b"), "b"): np.eye(2)}
    with pytest.raises(InvalidValueError, match=r"Pass stalk_dims\['a'\]"):
        sheaf_from_maps(graph, maps)


def test_random_orthogonal_maps_are_orthogonal():
    sheaf = random_orthogonal_sheaf(nx.cycle_graph(4), 3, seed=2)
    for edge in sheaf.edges:
        for vertex in edge:
            rmap = sheaf.restriction(edge, vertex)
            np.testing.assert_allclose(rmap.T @ rmap, np.eye(3), atol=1e-12)


def test_random_orthogonal_sheaf_is_reproducible():
    first = random_orthogonal_sheaf(nx.cycle_graph(4), 3, seed=2)
    second = random_orthogonal_sheaf(nx.cycle_graph(4), 3, seed=2)
    np.testing.assert_array_equal(
        first.laplacian().toarray(), second.laplacian().toarray()
    )


@pytest.mark.parametrize("dim", [0, -1, 1.5, True])
def test_constructors_reject_invalid_dim(dim):
    with pytest.raises(InvalidValueError, match="dim must be a positive integer"):
        constant_sheaf(nx.path_graph(2), dim)


# ------------------------------------------------------------ validation


def tiny_maps(a1_map=None) -> dict:
    return {
        (("z1", "a1"), "z1"): np.ones((4, 2)),
        (("z1", "a1"), "a1"): np.ones((4, 3)) if a1_map is None else a1_map,
    }


def test_empty_graph_is_rejected():
    with pytest.raises(InvalidValueError, match="graph has no vertices"):
        CellularSheaf(nx.Graph(), {}, {})


def test_non_graph_is_rejected():
    with pytest.raises(TypeError, match="networkx Graph or DiGraph"):
        CellularSheaf([("a", "b")], {}, {})


def test_multigraph_is_rejected():
    with pytest.raises(InvalidValueError, match="multigraphs are not supported"):
        CellularSheaf(nx.MultiGraph([(0, 1)]), {0: 1, 1: 1}, {})


def test_self_loop_is_rejected():
    graph = nx.Graph([(0, 0)])
    with pytest.raises(InvalidValueError, match="self-loop at vertex 0"):
        CellularSheaf(graph, {0: 1}, {})


def test_missing_stalk_dim_is_rejected():
    with pytest.raises(
        InvalidValueError, match="missing stalk dimension for vertex 'a1'"
    ):
        CellularSheaf(tiny_graph(), {"z1": 2}, tiny_maps())


@pytest.mark.parametrize("dim", [0, -3, 2.5, "3"])
def test_invalid_stalk_dim_is_rejected(dim):
    with pytest.raises(
        InvalidValueError, match=r"stalk_dims\['a1'\] must be a positive"
    ):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": dim}, tiny_maps())


def test_stalk_dim_of_unknown_vertex_is_rejected():
    dims = {"z1": 2, "a1": 3, "q": 1}
    with pytest.raises(InvalidValueError, match="entry for 'q', which is not a vertex"):
        CellularSheaf(tiny_graph(), dims, tiny_maps())


def test_missing_map_is_rejected():
    maps = tiny_maps()
    del maps[(("z1", "a1"), "a1")]
    message = "missing restriction map for edge ('z1', 'a1') at vertex 'a1'"
    with pytest.raises(InvalidValueError, match=re.escape(message)):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, maps)


def test_map_with_wrong_column_count_is_rejected():
    message = (
        "restriction map on edge ('z1', 'a1') at vertex 'a1' has shape (4, 5) but "
        "stalk 'a1' has dimension 3. Pass a matrix with 3 columns"
    )
    maps = tiny_maps(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=re.escape(message)):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, maps)


def test_one_dimensional_map_is_rejected():
    with pytest.raises(ShapeError, match="must be a 2-D matrix, got shape"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps(np.ones(3)))


def test_edge_dimension_disagreement_is_rejected():
    maps = tiny_maps(np.ones((5, 3)))
    message = "the map at 'z1' has 4 rows but the map at 'a1' has 5 rows"
    with pytest.raises(ShapeError, match=message):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, maps)


def test_edge_dims_map_mismatch_is_rejected():
    with pytest.raises(ShapeError, match="has 4 rows but edge_dims gives 2"):
        CellularSheaf(
            tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps(), edge_dims={("z1", "a1"): 2}
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_dense_map_is_rejected(bad):
    a1_map = np.ones((4, 3))
    a1_map[1, 2] = bad
    with pytest.raises(InvalidValueError, match="'a1' contains NaN or infinite"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps(a1_map))


def test_non_finite_sparse_map_is_rejected():
    a1_map = sp.csr_array(np.array([[np.nan, 0, 0]] + [[0, 0, 1.0]] * 3))
    with pytest.raises(InvalidValueError, match="contains NaN or infinite"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps(a1_map))


def test_non_numeric_map_is_rejected():
    a1_map = np.array([["x"] * 3] * 4)
    with pytest.raises(InvalidValueError, match="Pass a real numeric matrix"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps(a1_map))


def test_map_at_non_endpoint_is_rejected():
    graph = nx.Graph([("z1", "a1"), ("a1", "b")])
    maps = {(("z1", "a1"), "b"): np.eye(1)}
    with pytest.raises(InvalidValueError, match="'b' is not an endpoint"):
        CellularSheaf(graph, dict.fromkeys(graph, 1), maps)


def test_map_on_unknown_edge_is_rejected():
    maps = tiny_maps() | {(("z1", "q"), "z1"): np.eye(2)}
    with pytest.raises(InvalidValueError, match=r"edge \('z1', 'q'\) is not an edge"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, maps)


def test_both_orientations_of_a_map_are_rejected():
    maps = tiny_maps() | {(("a1", "z1"), "a1"): np.ones((4, 3))}
    with pytest.raises(InvalidValueError, match="both orientations"):
        CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, maps)


def test_boundary_coordinate_out_of_range_is_rejected():
    sheaf = CellularSheaf(tiny_graph(), {"z1": 2, "a1": 3}, tiny_maps())
    message = "boundary coordinate 3 of vertex 'a1' is out of range: stalk 'a1' has "
    with pytest.raises(ShapeError, match=message + "dimension 3"):
        sheaf.split_coordinates({"a1": [0, 3]})


def test_negative_boundary_coordinate_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(2), 2)
    with pytest.raises(ShapeError, match="coordinate -1 of vertex 0 is out of range"):
        sheaf.split_coordinates({0: [-1]})


def test_boundary_at_unknown_vertex_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(2))
    with pytest.raises(InvalidValueError, match="'q' is not a vertex"):
        sheaf.split_coordinates({"q": None})


def test_cochain_with_wrong_length_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(3))
    with pytest.raises(ShapeError, match=r"x has shape \(4,\), expected \(3,\)"):
        sheaf.energy(np.zeros(4))


def test_cochain_dict_missing_vertex_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(3))
    with pytest.raises(InvalidValueError, match="x is missing a value for 2"):
        sheaf.energy({0: [1.0], 1: [2.0]})


def test_cochain_dict_with_wrong_block_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(2), 2)
    with pytest.raises(ShapeError, match=r"x\[1\] has shape \(3,\)"):
        sheaf.energy({0: [1.0, 2.0], 1: [1.0, 2.0, 3.0]})


def test_cochain_dict_with_mixed_batches_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(2))
    with pytest.raises(ShapeError, match="mixes batch shapes"):
        sheaf.energy({0: [1.0], 1: [[1.0, 2.0]]})


def test_cochain_with_empty_batch_is_rejected():
    sheaf = constant_sheaf(nx.path_graph(2))
    with pytest.raises(ShapeError, match="batch of 0 columns"):
        sheaf.energy(np.zeros((2, 0)))


def test_harmonic_extension_evaluates_maps_at_state(relu_sheaf):
    pinned = np.array([1.0, -2.0])
    state = {"a": pinned, "b": np.zeros(2)}
    result = relu_sheaf.harmonic_extension({"a": pinned}, state=state)
    np.testing.assert_allclose(result["b"], [1.0, 0.0])


def test_sparse_restriction_returns_copy():
    graph = tiny_graph()
    maps = {
        (("z1", "a1"), "z1"): sp.csr_array(np.eye(2)),
        (("z1", "a1"), "a1"): np.ones((2, 3)),
    }
    sheaf = CellularSheaf(graph, {"z1": 2, "a1": 3}, maps)
    returned = sheaf.restriction(("z1", "a1"), "z1")
    returned.data[:] = 5.0
    np.testing.assert_array_equal(
        sheaf.restriction(("z1", "a1"), "z1").toarray(), np.eye(2)
    )
