"""Constructors of common cellular sheaves, re-exported by :mod:`sheafsim.sheaf`.

This module imports :class:`~sheafsim.sheaf.CellularSheaf` inside each function
because ``sheafsim.sheaf`` imports this module at load time.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from sheafsim.errors import InvalidValueError

if TYPE_CHECKING:
    from sheafsim.sheaf import CellularSheaf, Edge, RestrictionMap

__all__ = ["constant_sheaf", "random_orthogonal_sheaf", "sheaf_from_maps"]


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, nx.Graph) or graph.is_multigraph():
        raise InvalidValueError(
            f"expected a networkx Graph or DiGraph without parallel edges, got "
            f"{type(graph).__name__}; convert a multigraph with nx.Graph(graph)"
        )


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim <= 0:
        raise InvalidValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def constant_sheaf(graph: nx.Graph, dim: int = 1) -> CellularSheaf:
    """Build the constant sheaf with every stalk R^dim and every map the identity.

    Its Laplacian is the graph Laplacian Kronecker the dim x dim identity, and its
    H⁰ has dimension dim times the number of connected components.

    Parameters
    ----------
    graph : networkx.Graph or networkx.DiGraph
        Underlying graph. Edge orientation does not change the Laplacian.
    dim : int, default 1
        Dimension of every vertex and edge stalk.
    """
    from sheafsim.sheaf import CellularSheaf

    _check_graph(graph)
    dim = _check_dim(dim)
    identity = np.eye(dim)
    maps = {((u, v), w): identity for u, v in graph.edges for w in (u, v)}
    return CellularSheaf(graph, dict.fromkeys(graph.nodes, dim), maps)


def sheaf_from_maps(
    graph: nx.Graph,
    maps: Mapping[tuple[Edge, Hashable], RestrictionMap],
    stalk_dims: Mapping[Hashable, int] | None = None,
    edge_dims: Mapping[Edge, int] | None = None,
) -> CellularSheaf:
    """Build a sheaf, inferring each vertex stalk dimension from its fixed maps.

    The dimension of vertex v is the column count of the first fixed (non-callable)
    map at v, in the order of ``maps``. An entry of ``stalk_dims`` takes precedence
    over the inferred value. :class:`CellularSheaf` then checks every map against
    the resulting dimensions.

    Parameters
    ----------
    graph : networkx.Graph or networkx.DiGraph
        Underlying graph.
    maps : Mapping
        Restriction maps keyed by ``(edge, vertex)``, as in :class:`CellularSheaf`.
    stalk_dims : Mapping[Hashable, int], optional
        Stalk dimensions of vertices whose maps are all callables, of isolated
        vertices, or any dimension to set explicitly.
    edge_dims : Mapping, optional
        Edge stalk dimensions, required for edges whose two maps are callables.

    Raises
    ------
    InvalidValueError
        If a vertex has no fixed map and no entry in ``stalk_dims``.
    """
    from sheafsim.sheaf import CellularSheaf

    dims: dict[Hashable, int] = {}
    for key, rmap in maps.items():
        if not isinstance(key, tuple) or len(key) != 2 or callable(rmap):
            continue
        shape = np.shape(rmap)
        if key[1] not in dims and len(shape) == 2:
            dims[key[1]] = int(shape[1])
    dims.update(stalk_dims or {})
    for vertex in graph.nodes:
        if vertex not in dims:
            raise InvalidValueError(
                f"cannot infer the stalk dimension of vertex {vertex!r} because it "
                f"has no fixed restriction map. Pass stalk_dims[{vertex!r}]."
            )
    return CellularSheaf(graph, dims, maps, edge_dims)


def random_orthogonal_sheaf(
    graph: nx.Graph, dim: int, seed: int | np.random.Generator | None = None
) -> CellularSheaf:
    """Build a connection sheaf with a random orthogonal dim x dim map per incidence.

    Each map is drawn from the Haar measure on O(dim) by ``scipy.stats.ortho_group``
    with ``numpy.random.default_rng(seed)``. Draws follow ``graph.edges`` order,
    tail map before head map, so a fixed seed gives the same sheaf on the same
    graph.

    Parameters
    ----------
    graph : networkx.Graph or networkx.DiGraph
        Underlying graph.
    dim : int
        Dimension of every vertex and edge stalk.
    seed : int, numpy.random.Generator or None
        Seed or generator passed to ``numpy.random.default_rng``.
    """
    # scipy.stats takes about 0.4 s to import, so it is loaded on first use.
    from scipy.stats import ortho_group

    from sheafsim.sheaf import CellularSheaf

    _check_graph(graph)
    dim = _check_dim(dim)
    rng = np.random.default_rng(seed)
    maps = {}
    for u, v in graph.edges:
        for vertex in (u, v):
            maps[((u, v), vertex)] = ortho_group.rvs(dim, random_state=rng)
    return CellularSheaf(graph, dict.fromkeys(graph.nodes, dim), maps)
