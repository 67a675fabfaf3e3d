"""Cellular sheaves on networkx graphs: coboundary, Laplacian, energy, harmonic maps.

A cellular sheaf on a graph G = (V, E) attaches a stalk R^{d_v} to each vertex, a
stalk R^{d_e} to each edge and a linear restriction map F_{v◁e}: R^{d_v} -> R^{d_e}
to each incidence v◁e. The formulas follow Bosca and Ghrist, arXiv:2603.14831. For
an edge e = (u, v) the coboundary is (δx)_e = F_{v◁e} x_v - F_{u◁e} x_u, the sheaf
Laplacian is L = δᵀδ and the Dirichlet energy is E(x) = ½‖δx‖².

Cochains are flat vectors in vertex order (``list(graph.nodes)``), each vertex
owning a contiguous block of d_v coordinates, or dicts mapping vertex -> block.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeAlias

import networkx as nx
import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from sheafsim._constructors import (
    constant_sheaf,
    random_orthogonal_sheaf,
    sheaf_from_maps,
)
from sheafsim.errors import InvalidValueError, ShapeError

__all__ = [
    "CellularSheaf",
    "constant_sheaf",
    "random_orthogonal_sheaf",
    "sheaf_from_maps",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
Edge: TypeAlias = tuple[Hashable, Hashable]
FixedMap: TypeAlias = "FloatArray | sp.csr_array"
RestrictionMap: TypeAlias = (
    "npt.ArrayLike | sp.sparray | sp.spmatrix | Callable[[FloatArray], Any]"
)
Cochain: TypeAlias = "Mapping[Hashable, npt.ArrayLike] | npt.ArrayLike"
BoundaryValue: TypeAlias = "npt.ArrayLike | tuple[Sequence[int], npt.ArrayLike]"

# Dense SVD limit of h0_dimension and relative_h0_dimension, in total coordinates.
MAX_DENSE_DIM = 2000


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidValueError(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise InvalidValueError(f"{what} must be a positive integer, got {value}")
    return int(value)


def _float_array(value: Any, what: str) -> FloatArray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not a numeric array: {exc}") from exc


def _coerce_matrix(raw: Any, where: str, vertex: Hashable, dim: int) -> FixedMap:
    """Validate a fixed restriction map and return it as float ndarray or csr_array.

    ``where`` names the incidence in messages. Raises ShapeError unless the map is
    2-D with ``dim`` columns, and InvalidValueError for non-numeric or non-finite
    entries.
    """
    matrix: FixedMap
    if sp.issparse(raw):
        matrix = sp.csr_array(raw, dtype=np.float64)
        entries = matrix.data
    else:
        array = np.asarray(raw)
        if array.dtype.kind not in "biuf":
            raise InvalidValueError(
                f"{where} has dtype {array.dtype}. Pass a real numeric matrix, "
                "a scipy.sparse matrix or a callable"
            )
        matrix = np.array(array, dtype=np.float64)
        matrix.flags.writeable = False
        entries = matrix
    if matrix.ndim != 2:
        raise ShapeError(f"{where} must be a 2-D matrix, got shape {matrix.shape}")
    if matrix.shape[1] != dim:
        raise ShapeError(
            f"{where} has shape {matrix.shape} but stalk {vertex!r} has dimension "
            f"{dim}. Pass a matrix with {dim} columns, or correct "
            f"stalk_dims[{vertex!r}]."
        )
    if not np.all(np.isfinite(entries)):
        raise InvalidValueError(f"{where} contains NaN or infinite entries")
    return matrix


class CellularSheaf:
    """Cellular sheaf on a networkx graph (Bosca and Ghrist, arXiv:2603.14831).

    Parameters
    ----------
    graph : networkx.Graph or networkx.DiGraph
        Underlying graph without self-loops or parallel edges. Vertex coordinates
        follow ``list(graph.nodes)`` and edge coordinates ``list(graph.edges)``.
    stalk_dims : Mapping[Hashable, int]
        Vertex stalk dimension d_v for every vertex.
    maps : Mapping[tuple[tuple[Hashable, Hashable], Hashable], map]
        Restriction map F_{v◁e} keyed by ``(edge, vertex)``. For undirected graphs
        either orientation of ``edge`` is accepted. A map is a dense 2-D array or a
        scipy.sparse matrix of shape (d_e, d_v), or a callable ``f(x_v)`` returning
        such a matrix for the vertex value ``x_v`` of one sample, shape (d_v,).
    edge_dims : Mapping[tuple[Hashable, Hashable], int], optional
        Edge stalk dimension d_e. Inferred from the fixed maps of an edge, and
        required for an edge whose two maps are both callables.

    Notes
    -----
    The edge ``(u, v)`` is oriented from u to v: (δx)_e = F_{v◁e} x_v - F_{u◁e} x_u.
    """

    def __init__(
        self,
        graph: nx.Graph,
        stalk_dims: Mapping[Hashable, int],
        maps: Mapping[tuple[Edge, Hashable], RestrictionMap],
        edge_dims: Mapping[Edge, int] | None = None,
    ) -> None:
        if not isinstance(graph, nx.Graph):
            raise TypeError(f"graph must be a networkx Graph or DiGraph, got {graph!r}")
        if graph.is_multigraph():
            raise InvalidValueError(
                "multigraphs are not supported. Merge parallel edges into one edge "
                "with a larger edge stalk"
            )
        if graph.number_of_nodes() == 0:
            raise InvalidValueError("graph has no vertices. Add at least one vertex.")
        for u, v in graph.edges:
            if u == v:
                raise InvalidValueError(
                    f"graph has a self-loop at vertex {u!r}. Remove it, because a "
                    "cellular sheaf needs two distinct endpoints per edge"
                )
        self._graph = graph
        self._vertices: list[Hashable] = list(graph.nodes)
        self._edges: list[Edge] = [(u, v) for u, v in graph.edges]
        self._edge_index = {edge: k for k, edge in enumerate(self._edges)}

        for vertex in stalk_dims:
            if vertex not in graph:
                raise InvalidValueError(
                    f"stalk_dims has an entry for {vertex!r}, which is not a vertex "
                    "of the graph"
                )
        self._stalk_dims: dict[Hashable, int] = {}
        for vertex in self._vertices:
            if vertex not in stalk_dims:
                raise InvalidValueError(
                    f"missing stalk dimension for vertex {vertex!r}. Add it to "
                    "stalk_dims"
                )
            what = f"stalk_dims[{vertex!r}]"
            self._stalk_dims[vertex] = _positive_int(stalk_dims[vertex], what)
        offsets = np.cumsum([0] + [self._stalk_dims[v] for v in self._vertices])
        self._vertex_offsets = {
            v: int(offsets[i]) for i, v in enumerate(self._vertices)
        }
        self._total_dim = int(offsets[-1])

        self._maps = self._validate_maps(maps)
        self._edge_dims = self._resolve_edge_dims(edge_dims or {})
        edge_offsets = np.cumsum([0] + [self._edge_dims[e] for e in self._edges])
        self._edge_offsets = {
            e: int(edge_offsets[k]) for k, e in enumerate(self._edges)
        }
        self._total_edge_dim = int(edge_offsets[-1])
        self._state_dependent = any(callable(m) for m in self._maps.values())

        # Incident (edge, neighbour) pairs of each vertex, in edge order.
        self._incidences: dict[Hashable, list[tuple[Edge, Hashable]]] = {
            v: [] for v in self._vertices
        }
        for u, v in self._edges:
            self._incidences[u].append(((u, v), v))
            self._incidences[v].append(((u, v), u))

    # ----------------------------------------------------------- construction

    def _normalise_edge(self, edge: Any) -> Edge:
        """Return ``edge`` in the graph's stored orientation, or raise."""
        if not isinstance(edge, tuple) or len(edge) != 2:
            raise InvalidValueError(f"an edge must be a 2-tuple (u, v), got {edge!r}")
        if edge in self._edge_index:
            return edge
        if not self._graph.is_directed() and (edge[1], edge[0]) in self._edge_index:
            return (edge[1], edge[0])
        raise InvalidValueError(f"edge {edge!r} is not an edge of the graph")

    def _validate_maps(
        self, maps: Mapping[tuple[Edge, Hashable], RestrictionMap]
    ) -> dict[tuple[Edge, Hashable], Any]:
        given: dict[tuple[Edge, Hashable], Any] = {}
        for key, raw in maps.items():
            if not isinstance(key, tuple) or len(key) != 2:
                raise InvalidValueError(
                    f"restriction map key {key!r} must be a pair (edge, vertex)"
                )
            edge = self._normalise_edge(key[0])
            vertex = key[1]
            if vertex not in edge:
                raise InvalidValueError(
                    f"restriction map key {key!r}: vertex {vertex!r} is not an "
                    f"endpoint of edge {edge!r}"
                )
            if (edge, vertex) in given:
                raise InvalidValueError(
                    f"edge {edge!r} has two restriction maps at vertex {vertex!r} "
                    "because both orientations of the edge were given. Keep one."
                )
            given[(edge, vertex)] = raw

        checked: dict[tuple[Edge, Hashable], Any] = {}
        for edge in self._edges:
            for vertex in edge:
                if (edge, vertex) not in given:
                    raise InvalidValueError(
                        f"missing restriction map for edge {edge!r} at vertex "
                        f"{vertex!r}. Add maps[({edge!r}, {vertex!r})]."
                    )
                raw = given[(edge, vertex)]
                if callable(raw):
                    checked[(edge, vertex)] = raw
                    continue
                where = f"restriction map on edge {edge!r} at vertex {vertex!r}"
                dim = self._stalk_dims[vertex]
                checked[(edge, vertex)] = _coerce_matrix(raw, where, vertex, dim)
        return checked

    def _resolve_edge_dims(self, edge_dims: Mapping[Edge, int]) -> dict[Edge, int]:
        declared = {
            self._normalise_edge(edge): _positive_int(dim, f"edge_dims[{edge!r}]")
            for edge, dim in edge_dims.items()
        }
        resolved: dict[Edge, int] = {}
        for edge in self._edges:
            rows = {
                vertex: self._maps[(edge, vertex)].shape[0]
                for vertex in edge
                if not callable(self._maps[(edge, vertex)])
            }
            if len(set(rows.values())) > 1:
                (u, rows_u), (v, rows_v) = rows.items()
                raise ShapeError(
                    f"restriction maps on edge {edge!r} disagree on the edge stalk "
                    f"dimension: the map at {u!r} has {rows_u} rows but the map at "
                    f"{v!r} has {rows_v} rows. Give both maps the same number of rows."
                )
            if edge in declared:
                for vertex, count in rows.items():
                    if count != declared[edge]:
                        raise ShapeError(
                            f"restriction map on edge {edge!r} at vertex {vertex!r} "
                            f"has {count} rows but edge_dims gives {declared[edge]}. "
                            "Make them agree."
                        )
                resolved[edge] = declared[edge]
            elif rows:
                resolved[edge] = next(iter(rows.values()))
            else:
                raise InvalidValueError(
                    f"cannot infer the stalk dimension of edge {edge!r} because both "
                    f"its restriction maps are callables. Pass edge_dims[{edge!r}]."
                )
        return resolved

    # ------------------------------------------------------------- structure

    @property
    def graph(self) -> nx.Graph:
        """Underlying networkx graph."""
        return self._graph

    @property
    def vertices(self) -> list[Hashable]:
        """Vertices in coordinate order, ``list(graph.nodes)``."""
        return list(self._vertices)

    @property
    def edges(self) -> list[Edge]:
        """Edges in coordinate order and orientation, ``list(graph.edges)``."""
        return list(self._edges)

    @property
    def total_dim(self) -> int:
        """Total vertex dimension Σ_v d_v, the length of a flat 0-cochain."""
        return self._total_dim

    @property
    def total_edge_dim(self) -> int:
        """Total edge dimension Σ_e d_e, the number of rows of the coboundary."""
        return self._total_edge_dim

    @property
    def is_state_dependent(self) -> bool:
        """Whether any restriction map is a callable of the vertex value."""
        return self._state_dependent

    def stalk_dim(self, vertex: Hashable) -> int:
        """Return the dimension d_v of the stalk at ``vertex``."""
        if vertex not in self._stalk_dims:
            raise InvalidValueError(f"{vertex!r} is not a vertex of the graph")
        return self._stalk_dims[vertex]

    def edge_dim(self, edge: Edge) -> int:
        """Return the dimension d_e of the stalk at ``edge`` (either orientation)."""
        return self._edge_dims[self._normalise_edge(edge)]

    def vertex_slice(self, vertex: Hashable) -> slice:
        """Return the slice of ``vertex``'s coordinates in a flat 0-cochain."""
        dim = self.stalk_dim(vertex)
        start = self._vertex_offsets[vertex]
        return slice(start, start + dim)

    def edge_slice(self, edge: Edge) -> slice:
        """Return the slice of ``edge``'s rows in the coboundary matrix."""
        edge = self._normalise_edge(edge)
        start = self._edge_offsets[edge]
        return slice(start, start + self._edge_dims[edge])

    def __repr__(self) -> str:
        return (
            f"CellularSheaf({len(self._vertices)} vertices, {len(self._edges)} edges, "
            f"total_dim={self._total_dim}, state_dependent={self._state_dependent})"
        )

    # ------------------------------------------------------- restriction maps

    def _vertex_state(self, state: Cochain, vertex: Hashable) -> FloatArray:
        """Return one sample of ``vertex``'s value from ``state``, shape (d_v,)."""
        dim = self._stalk_dims[vertex]
        if isinstance(state, Mapping):
            if vertex not in state:
                raise InvalidValueError(f"state is missing a value for {vertex!r}")
            value = _float_array(state[vertex], f"state[{vertex!r}]")
        else:
            flat = _float_array(state, "state")
            if flat.ndim not in (1, 2) or flat.shape[0] != self._total_dim:
                raise ShapeError(
                    f"state has shape {flat.shape}, expected ({self._total_dim},) "
                    "or a dict vertex -> value"
                )
            value = flat[self.vertex_slice(vertex)]
        if value.shape not in ((dim,), (dim, 1)):
            raise ShapeError(
                f"state value of {vertex!r} has shape {value.shape}, expected "
                f"({dim},) because maps are evaluated at one sample"
            )
        return value.reshape(dim)

    def _evaluate(self, edge: Edge, vertex: Hashable, value: FloatArray) -> FixedMap:
        """Evaluate a callable restriction map at one vertex value, shape (d_v,)."""
        where = f"restriction map on edge {edge!r} at vertex {vertex!r}"
        matrix = _coerce_matrix(
            self._maps[(edge, vertex)](value), where, vertex, self._stalk_dims[vertex]
        )
        if matrix.shape[0] != self._edge_dims[edge]:
            raise ShapeError(
                f"{where} returned shape {matrix.shape} but edge {edge!r} has "
                f"dimension {self._edge_dims[edge]}. Return a matrix with "
                f"{self._edge_dims[edge]} rows"
            )
        return matrix

    def restriction(
        self, edge: Edge, vertex: Hashable, state: Cochain | None = None
    ) -> FixedMap:
        """Return the restriction map F_{v◁e} as a (d_e, d_v) matrix.

        Parameters
        ----------
        edge : tuple
            Edge ``(u, v)``. Undirected graphs accept either orientation.
        vertex : Hashable
            Endpoint of ``edge``.
        state : dict or array_like, optional
            One sample of the 0-cochain, a dict vertex -> (d_v,) array or a flat
            (total_dim,) array. Required when the map is a callable, which is
            evaluated at ``state[vertex]``.

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_array
            Float matrix of shape (d_e, d_v). Dense maps are returned read-only,
            and sparse maps as a copy in csr format.
        """
        edge = self._normalise_edge(edge)
        if vertex not in edge:
            raise InvalidValueError(f"{vertex!r} is not an endpoint of edge {edge!r}")
        rmap = self._maps[(edge, vertex)]
        if sp.issparse(rmap):
            return rmap.copy()
        if not callable(rmap):
            return rmap
        if state is None:
            raise InvalidValueError(
                f"restriction map on edge {edge!r} at vertex {vertex!r} depends on "
                f"the state. Pass state with a value for {vertex!r}."
            )
        return self._evaluate(edge, vertex, self._vertex_state(state, vertex))

    def _restrict(self, edge: Edge, vertex: Hashable, values: FloatArray) -> FloatArray:
        """Apply F_{v◁e} to each column of ``values`` (d_v, batch) -> (d_e, batch)."""
        rmap = self._maps[(edge, vertex)]
        if not callable(rmap):
            return np.asarray(rmap @ values)
        out = np.empty((self._edge_dims[edge], values.shape[1]))
        for j in range(values.shape[1]):
            out[:, j] = self._evaluate(edge, vertex, values[:, j]) @ values[:, j]
        return out

    def _restrict_transpose(
        self, edge: Edge, vertex: Hashable, values: FloatArray, residual: FloatArray
    ) -> FloatArray:
        """Apply F_{v◁e}ᵀ, evaluated at ``values`` (d_v, batch), to ``residual``."""
        rmap = self._maps[(edge, vertex)]
        if not callable(rmap):
            return np.asarray(rmap.T @ residual)
        out = np.empty(values.shape)
        for j in range(values.shape[1]):
            out[:, j] = self._evaluate(edge, vertex, values[:, j]).T @ residual[:, j]
        return out

    # -------------------------------------------------------------- operators

    def coboundary(self, state: Cochain | None = None) -> sp.csr_array:
        """Assemble the coboundary δ (arXiv:2603.14831), shape (Σ d_e, Σ d_v).

        Row block e = (u, v) holds -F_{u◁e} in column block u and F_{v◁e} in
        column block v. ``state`` is one sample of the 0-cochain at which callable
        maps are evaluated, and is required if the sheaf is state-dependent.
        """
        rows = [np.zeros(0, dtype=np.intp)]
        cols = [np.zeros(0, dtype=np.intp)]
        data = [np.zeros(0)]
        for edge in self._edges:
            for vertex, sign in ((edge[0], -1.0), (edge[1], 1.0)):
                block = sp.coo_array(self.restriction(edge, vertex, state))
                rows.append(block.row + self._edge_offsets[edge])
                cols.append(block.col + self._vertex_offsets[vertex])
                data.append(sign * block.data)
        triplets = (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols)))
        shape = (self._total_edge_dim, self._total_dim)
        return sp.csr_array(sp.coo_array(triplets, shape=shape))

    def laplacian(self, state: Cochain | None = None) -> sp.csr_array:
        """Assemble the sheaf Laplacian L = δᵀδ (arXiv:2603.14831).

        Diagonal block v is Σ_e F_{v◁e}ᵀ F_{v◁e} and the off-diagonal block (u, v)
        of an edge is -F_{u◁e}ᵀ F_{v◁e}. Shape (total_dim, total_dim).
        """
        delta = self.coboundary(state)
        return sp.csr_array(delta.T @ delta)

    # --------------------------------------------------------------- cochains

    def _as_columns(self, x: Cochain, what: str = "x") -> tuple[FloatArray, bool]:
        """Convert a 0-cochain to a (total_dim, batch) array.

        Returns the array and whether the input had no batch axis.
        """
        if not isinstance(x, Mapping):
            flat = _float_array(x, what)
            if flat.ndim not in (1, 2) or flat.shape[0] != self._total_dim:
                raise ShapeError(
                    f"{what} has shape {flat.shape}, expected ({self._total_dim},) or "
                    f"({self._total_dim}, batch), or a dict vertex -> value"
                )
            columns = flat.reshape(self._total_dim, -1)
            one_sample = flat.ndim == 1
        else:
            for vertex in x:
                if vertex not in self._stalk_dims:
                    raise InvalidValueError(
                        f"{what} has a value for {vertex!r}, which is not a vertex "
                        "of the graph"
                    )
            blocks = []
            for vertex in self._vertices:
                if vertex not in x:
                    raise InvalidValueError(f"{what} is missing a value for {vertex!r}")
                blocks.append(_float_array(x[vertex], f"{what}[{vertex!r}]"))
            shapes = {block.shape[1:] for block in blocks}
            if len(shapes) > 1:
                raise ShapeError(
                    f"{what} mixes batch shapes {sorted(shapes)}. Give every vertex "
                    "a (d_v,) array or every vertex a (d_v, batch) array"
                )
            for vertex, block in zip(self._vertices, blocks, strict=True):
                dim = self._stalk_dims[vertex]
                if block.ndim not in (1, 2) or block.shape[0] != dim:
                    raise ShapeError(
                        f"{what}[{vertex!r}] has shape {block.shape}, expected "
                        f"({dim},) or ({dim}, batch)"
                    )
            columns = np.vstack([block.reshape(block.shape[0], -1) for block in blocks])
            one_sample = blocks[0].ndim == 1
        if columns.shape[1] == 0:
            raise ShapeError(f"{what} has a batch of 0 columns. Pass at least one.")
        return columns, one_sample

    def _split_blocks(self, columns: FloatArray) -> dict[Hashable, FloatArray]:
        return {v: columns[self.vertex_slice(v)] for v in self._vertices}

    def edge_residuals(self, x: Cochain) -> dict[Edge, FloatArray]:
        """Compute the coboundary (δx)_e = F_{v◁e} x_v - F_{u◁e} x_u of every edge.

        Parameters
        ----------
        x : dict or array_like
            0-cochain: dict vertex -> (d_v,) or (d_v, batch) array, or a flat
            (total_dim,) or (total_dim, batch) array. Callable maps are evaluated
            at each column separately.

        Returns
        -------
        dict
            Edge -> array of shape (d_e, batch), with batch 1 for 1-D input.
        """
        blocks = self._split_blocks(self._as_columns(x)[0])
        return {
            (u, v): self._restrict((u, v), v, blocks[v])
            - self._restrict((u, v), u, blocks[u])
            for u, v in self._edges
        }

    def energy(self, x: Cochain) -> float | FloatArray:
        """Compute the Dirichlet energy E(x) = ½‖δx‖² (arXiv:2603.14831).

        Returns a float for 1-D input, else an array of shape (batch,) holding the
        energy of each column.
        """
        columns, one_sample = self._as_columns(x)
        energy = np.zeros(columns.shape[1])
        for residual in self.edge_residuals(columns).values():
            energy += 0.5 * np.sum(residual**2, axis=0)
        return float(energy[0]) if one_sample else energy

    def discord(self, x: Cochain) -> dict[Edge, float]:
        """Compute the discord of every edge, the batch mean of ‖(δx)_e‖²."""
        return {
            edge: float(np.mean(np.sum(residual**2, axis=0)))
            for edge, residual in self.edge_residuals(x).items()
        }

    def local_forces(self, x: Cochain) -> dict[Hashable, FloatArray]:
        """Compute the heat-equation force on every vertex, edge by edge.

        force_v = -Σ_{e∋v} F_{v◁e}ᵀ (F_{v◁e} x_v - F_{u◁e} x_u), where u is the other
        endpoint of e (arXiv:2603.14831). Each vertex uses only its own maps and the
        neighbour's restricted value F_{u◁e} x_u, as in message passing. For fixed
        maps the result equals -(L x) block by block.

        Returns
        -------
        dict
            Vertex -> array of shape (d_v, batch), with batch 1 for 1-D input.
        """
        blocks = self._split_blocks(self._as_columns(x)[0])
        forces = {}
        for vertex in self._vertices:
            force = np.zeros(blocks[vertex].shape)
            for edge, neighbour in self._incidences[vertex]:
                own = self._restrict(edge, vertex, blocks[vertex])
                received = self._restrict(edge, neighbour, blocks[neighbour])
                force -= self._restrict_transpose(
                    edge, vertex, blocks[vertex], own - received
                )
            forces[vertex] = force
        return forces

    # ------------------------------------------------------------- boundaries

    def split_coordinates(
        self, boundary: Mapping[Hashable, Sequence[int] | None]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Split flat coordinates into free (Ω) and boundary (U) index arrays.

        Parameters
        ----------
        boundary : Mapping[Hashable, Sequence[int] | None]
            Vertex -> stalk coordinates on the boundary, or None for all of them.

        Returns
        -------
        free, pinned : numpy.ndarray
            Sorted flat coordinate indices of Ω and of U.
        """
        mask = np.zeros(self._total_dim, dtype=bool)
        for vertex, coords in boundary.items():
            where = self.vertex_slice(vertex)
            if coords is None:
                mask[where] = True
                continue
            index = np.asarray(coords)
            if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
                raise InvalidValueError(
                    f"boundary coordinates of {vertex!r} must be a sequence of "
                    f"integers, got {coords!r}"
                )
            dim = self._stalk_dims[vertex]
            for coord in index:
                if not 0 <= coord < dim:
                    raise ShapeError(
                        f"boundary coordinate {coord} of vertex {vertex!r} is out of "
                        f"range: stalk {vertex!r} has dimension {dim}, so valid "
                        f"coordinates are 0 to {dim - 1}"
                    )
            mask[where.start + index.astype(np.intp)] = True
        return np.flatnonzero(~mask), np.flatnonzero(mask)

    def restricted_laplacian(
        self,
        boundary: Mapping[Hashable, Sequence[int] | None],
        state: Cochain | None = None,
    ) -> tuple[sp.csr_array, sp.csr_array]:
        """Return the blocks L[Ω, Ω] and L[Ω, U] of the sheaf Laplacian.

        ``boundary`` is as in :meth:`split_coordinates`. Shapes are (|Ω|, |Ω|) and
        (|Ω|, |U|), both in the flat coordinate order.
        """
        free, pinned = self.split_coordinates(boundary)
        rows = self.laplacian(state)[free, :]
        return sp.csr_array(rows[:, free]), sp.csr_array(rows[:, pinned])

    def _boundary_columns(
        self, boundary_values: Mapping[Hashable, BoundaryValue]
    ) -> tuple[dict[Hashable, Sequence[int] | None], FloatArray, bool]:
        """Parse harmonic-extension boundary values into a (total_dim, batch) array.

        Returns the boundary for :meth:`split_coordinates`, the full array with the
        given values placed and zeros elsewhere, and whether all values were 1-D.
        """
        boundary: dict[Hashable, Sequence[int] | None] = {}
        placed: list[tuple[Hashable, npt.NDArray[np.intp], FloatArray]] = []
        for vertex, given in boundary_values.items():
            dim = self.stalk_dim(vertex)
            what = f"boundary_values[{vertex!r}]"
            if isinstance(given, tuple):
                if len(given) != 2:
                    raise InvalidValueError(
                        f"{what} is a tuple of length {len(given)}, but a tuple "
                        "must be (coords, values). Pass full values as a list or array."
                    )
                boundary[vertex] = given[0]
                self.split_coordinates({vertex: given[0]})
                coords = np.asarray(given[0], dtype=np.intp).reshape(-1)
                if np.unique(coords).size != coords.size:
                    raise InvalidValueError(
                        f"{what} repeats a coordinate: {given[0]!r}"
                    )
                values = _float_array(given[1], what)
            else:
                boundary[vertex] = None
                coords = np.arange(dim, dtype=np.intp)
                values = _float_array(given, what)
            if values.ndim not in (1, 2) or values.shape[0] != coords.size:
                raise ShapeError(
                    f"{what} has shape {values.shape}, expected ({coords.size},) or "
                    f"({coords.size}, batch), one row per boundary coordinate"
                )
            if not np.all(np.isfinite(values)):
                raise InvalidValueError(f"{what} contains NaN or infinite values")
            placed.append((vertex, coords, values))

        shapes = {values.shape[1:] for _, _, values in placed}
        if len(shapes) > 1:
            raise ShapeError(
                f"boundary_values mixes batch shapes {sorted(shapes)}. Give every "
                "vertex 1-D values or every vertex values with the same batch"
            )
        batch = 1
        if placed and placed[0][2].ndim == 2:
            batch = placed[0][2].shape[1]
        if batch == 0:
            raise ShapeError("boundary_values has a batch of 0 columns")
        columns = np.zeros((self._total_dim, batch))
        for vertex, coords, values in placed:
            columns[self._vertex_offsets[vertex] + coords] = values.reshape(-1, batch)
        one_sample = all(values.ndim == 1 for _, _, values in placed)
        return boundary, columns, one_sample

    def harmonic_extension(
        self,
        boundary_values: Mapping[Hashable, BoundaryValue],
        state: Cochain | None = None,
    ) -> dict[Hashable, FloatArray]:
        """Extend boundary values harmonically to all vertices (arXiv:2603.14831).

        Solves x_Ω = -L[Ω, Ω]⁻¹ L[Ω, U] u with a sparse LU factorisation, for all
        batch columns at once. The extension is unique iff L[Ω, Ω] is positive
        definite, which is true iff the relative cohomology H⁰(G, U; F) is zero.

        Parameters
        ----------
        boundary_values : Mapping
            Vertex -> values on the boundary U. A value is an array of shape (d_v,)
            or (d_v, batch) for all coordinates of the vertex, or a tuple
            ``(coords, values)`` with ``values`` of shape (len(coords),) or
            (len(coords), batch). A tuple is always read as ``(coords, values)``.
            Every value must have the same batch shape.
        state : dict or array_like, optional
            One sample of the 0-cochain at which callable maps are evaluated.

        Returns
        -------
        dict
            Vertex -> array of shape (d_v, batch), or (d_v,) when every boundary
            value was 1-D. Boundary coordinates keep their given values.

        Raises
        ------
        InvalidValueError
            If L[Ω, Ω] is singular, so the extension is not unique.
        """
        boundary, columns, one_sample = self._boundary_columns(boundary_values)
        free, pinned = self.split_coordinates(boundary)
        if free.size:
            free_block, coupling = self.restricted_laplacian(boundary, state)
            rhs = -(coupling @ columns[pinned])
            solution = _solve_positive_definite(free_block, rhs)
            columns[free] = solution
        if one_sample:
            return {v: columns[self.vertex_slice(v), 0] for v in self._vertices}
        return {v: columns[self.vertex_slice(v)] for v in self._vertices}

    # -------------------------------------------------------------- cohomology

    def _dense_coboundary(self, state: Cochain | None, caller: str) -> FloatArray:
        if self._total_dim > MAX_DENSE_DIM:
            raise InvalidValueError(
                f"{caller} computes a dense SVD and is meant for small sheaves: "
                f"total_dim is {self._total_dim} but the limit is {MAX_DENSE_DIM}"
            )
        return self.coboundary(state).toarray()

    def h0_dimension(self, state: Cochain | None = None) -> int:
        """Return dim H⁰ = dim ker δ, the dimension of the global sections.

        Uses a dense SVD (``scipy.linalg.null_space``), so total_dim must be at most
        ``MAX_DENSE_DIM``.
        """
        delta = self._dense_coboundary(state, "h0_dimension")
        if delta.shape[0] == 0:
            return self._total_dim
        return int(scipy.linalg.null_space(delta).shape[1])

    def relative_h0_dimension(
        self,
        boundary: Mapping[Hashable, Sequence[int] | None],
        state: Cochain | None = None,
    ) -> int:
        """Return dim H⁰(G, U; F), the kernel dimension of δ on free coordinates.

        It is zero iff the harmonic extension from the boundary U is unique.
        ``boundary`` is as in :meth:`split_coordinates`. Uses a dense SVD, so
        total_dim must be at most ``MAX_DENSE_DIM``.
        """
        delta = self._dense_coboundary(state, "relative_h0_dimension")
        free, _ = self.split_coordinates(boundary)
        if free.size == 0:
            return 0
        if delta.shape[0] == 0:
            return int(free.size)
        return int(scipy.linalg.null_space(delta[:, free]).shape[1])


def _solve_positive_definite(matrix: sp.csr_array, rhs: FloatArray) -> FloatArray:
    """Solve ``matrix @ X = rhs`` for a symmetric positive semidefinite ``matrix``.

    Raises InvalidValueError when ``matrix`` is singular to working precision.
    """
    singular = (
        "harmonic extension is not unique: the restricted Laplacian L[free, free] is "
        "singular, so the relative H^0 is nonzero. Pin more vertices or coordinates "
        "in boundary_values."
    )
    try:
        # Diagonal pivots in a symmetric ordering make this an LDLᵀ-type
        # factorisation. In exact arithmetic every pivot is then a diagonal entry of
        # a Schur complement, so it is at least the smallest eigenvalue of the
        # matrix, and a pivot near zero means the matrix is singular or nearly so.
        factor = splu(
            sp.csc_array(matrix),
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
    except RuntimeError as exc:  # SuperLU reports "Factor is exactly singular".
        raise InvalidValueError(singular) from exc
    pivots = np.abs(factor.U.diagonal())
    # Relative tolerance n * eps * scale as in numpy.linalg.matrix_rank, with the
    # largest diagonal entry as the scale in place of the largest singular value.
    tolerance = matrix.shape[0] * np.finfo(np.float64).eps * matrix.diagonal().max()
    if pivots.min() <= tolerance:
        raise InvalidValueError(singular)
    solution = factor.solve(rhs)
    if not np.all(np.isfinite(solution)):
        raise InvalidValueError(singular)
    return solution
