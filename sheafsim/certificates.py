"""The neural sheaf as a general sheaf, its free Laplacian, and certificates.

For one input column the activation pattern ``R_l = diag(1[z_l >= 0])`` of the
forward pass fixes every restriction map, so the neural sheaf becomes a linear
cellular sheaf. Ordering the edges (affine 1, activation 1, ..., affine k+1) and
the free blocks (z1, a1, ..., z{k+1}), the restricted coboundary ``delta_free``
is square and block lower-bidiagonal with identity diagonal blocks: it is unit
lower triangular with determinant 1 for every pattern. Hence
``L_free = delta_free^T delta_free`` is positive definite, and forward
substitution of ``delta_free c = (W_1 x + b_1, 0, b_2, 0, ..., b_{k+1})`` is the
forward pass, the unique harmonic extension (arXiv:2603.14831).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh, splu

from sheafsim._backend import to_numpy
from sheafsim.errors import InvalidValueError
from sheafsim.neural import NeuralSheaf, apply_output
from sheafsim.sheaf import CellularSheaf

__all__ = [
    "free_coboundary",
    "free_laplacian",
    "extreme_eigenvalues",
    "as_cellular_sheaf",
    "Certificate",
    "certify",
]

# Free dimension above which eigenvalues come from a sparse solver.
DENSE_EIGEN_LIMIT = 1500


def _column(net: NeuralSheaf, x: Any) -> np.ndarray:
    x = to_numpy(net.check_input(x))
    if x.shape[1] != 1:
        raise InvalidValueError(
            f"expected one input column, got {x.shape[1]}; pass x[:, j] for sample j"
        )
    return x


def _numpy_net(net: NeuralSheaf) -> NeuralSheaf:
    if isinstance(net.weights[0], np.ndarray):
        return net
    return net.to("numpy")


def free_coboundary(net: NeuralSheaf, x: Any) -> sp.csr_array:
    """Restricted coboundary ``delta_free`` at the forward-pass pattern of ``x``.

    Parameters
    ----------
    x : array_like, shape (n_0,) or (n_0, 1)
        One input sample.

    Returns
    -------
    scipy.sparse.csr_array, square
        Rows are edge coordinates (affine 1, activation 1, ..., affine k+1,
        output), columns free coordinates (z1, a1, ..., z{k+1}, y_out). The
        output edge uses the Jacobian of ``phi`` at ``z{k+1}``.
    """
    net = _numpy_net(net)
    x = _column(net, x)
    fp = net.forward(x)
    names = net.free_vertices
    blocks: list[list[Any]] = []
    k = net.depth
    for edge in net.edges:
        row: list[Any] = [None] * len(names)
        down = names.index(edge.downstream)
        row[down] = sp.identity(net.stalk_dim(edge.downstream), format="csr")
        if edge.kind == "affine" and edge.upstream != "x":
            row[names.index(edge.upstream)] = sp.csr_array(-net.weights[edge.layer - 1])
        elif edge.kind == "activation":
            mask = (fp[edge.upstream][:, 0] >= 0).astype(float)
            row[names.index(edge.upstream)] = sp.diags_array(-mask)
        elif edge.kind == "output":
            phi = fp.output[:, 0]
            if net.output == "sigmoid":
                jac = np.diag(phi * (1 - phi))
            else:
                jac = np.diag(phi) - np.outer(phi, phi)
            row[names.index(f"z{k + 1}")] = sp.csr_array(-jac)
        blocks.append(row)
    return sp.csr_array(sp.block_array(blocks, format="csr"))


def free_laplacian(net: NeuralSheaf, x: Any) -> sp.csr_array:
    """Free-coordinate Laplacian ``L_free = delta_free^T delta_free`` at ``x``."""
    delta = free_coboundary(net, x)
    return sp.csr_array(delta.T @ delta)


def extreme_eigenvalues(net: NeuralSheaf, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``lambda_min`` and ``lambda_max`` of ``L_free`` for every input column.

    Dense ``numpy.linalg.eigvalsh`` up to a free dimension of
    ``DENSE_EIGEN_LIMIT``, ``scipy.sparse.linalg.eigsh`` above it (shift-invert
    at 0 for ``lambda_min``).

    Returns
    -------
    lambda_min, lambda_max : ndarray, shape (batch,)
    """
    x = to_numpy(net.check_input(x))
    lam_min = np.empty(x.shape[1])
    lam_max = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        laplacian = free_laplacian(net, x[:, j])
        if laplacian.shape[0] <= DENSE_EIGEN_LIMIT:
            values = np.linalg.eigvalsh(laplacian.toarray())
            lam_min[j], lam_max[j] = values[0], values[-1]
        else:
            csc = sp.csc_matrix(laplacian)
            lam_max[j] = eigsh(csc, k=1, which="LA", return_eigenvectors=False)[0]
            lam_min[j] = eigsh(
                csc, k=1, sigma=0.0, which="LM", return_eigenvectors=False
            )[0]
    return lam_min, lam_max


def as_cellular_sheaf(
    net: NeuralSheaf, x: Any
) -> tuple[CellularSheaf, dict[Any, Any], dict[Any, Any]]:
    """Express the neural sheaf at the pattern of input ``x`` as a linear sheaf.

    The biases are made linear by a constant coordinate: the stalks of ``x`` and
    of every ``a_l`` gain a last coordinate held at 1, and the upstream map of
    affine edge ``l`` is ``[W_l, b_l]``. The output edge is left out, because
    ``phi`` is nonlinear; ``y_out`` is ``phi(z{k+1})`` at any harmonic state.

    Returns
    -------
    sheaf : CellularSheaf
        On the path graph ``x - z1 - a1 - ... - z{k+1}``.
    boundary : dict
        Boundary coordinates for :meth:`CellularSheaf.split_coordinates`.
    boundary_values : dict
        Values for :meth:`CellularSheaf.harmonic_extension`: ``[x; 1]`` on
        ``x`` and 1 on the constant coordinate of every ``a_l``.
    """
    net = _numpy_net(net)
    x = _column(net, x)
    fp = net.forward(x)
    k = net.depth
    names = ["x"] + [v for v in net.free_vertices if v != "y_out"]
    graph = nx.Graph()
    graph.add_nodes_from(names)
    dims: dict[Any, int] = {v: net.stalk_dim(v) for v in names}
    for v in names:
        if v == "x" or v.startswith("a"):
            dims[v] += 1
    maps: dict[Any, Any] = {}
    for edge in net.edges:
        if edge.kind == "output":
            continue
        key = (edge.upstream, edge.downstream)
        graph.add_edge(*key)
        n = net.stalk_dim(edge.downstream)
        if edge.kind == "affine":
            w = net.weights[edge.layer - 1]
            maps[(key, edge.upstream)] = np.hstack([w, net.biases[edge.layer - 1]])
            maps[(key, edge.downstream)] = np.eye(n)
        else:
            mask = (fp[edge.upstream][:, 0] >= 0).astype(float)
            maps[(key, edge.upstream)] = np.diag(mask)
            maps[(key, edge.downstream)] = np.hstack([np.eye(n), np.zeros((n, 1))])
    sheaf = CellularSheaf(graph, dims, maps)
    boundary: dict[Any, Any] = {"x": None}
    values: dict[Any, Any] = {"x": np.append(x[:, 0], 1.0)}
    for layer in range(1, k + 1):
        boundary[f"a{layer}"] = [net.widths[layer]]
        values[f"a{layer}"] = ([net.widths[layer]], np.ones(1))
    return sheaf, boundary, values


@dataclass
class Certificate:
    """Per-sample checks that the forward pass is the unique harmonic extension.

    Attributes
    ----------
    unit_lower_triangular : ndarray of bool, shape (batch,)
        ``delta_free`` has a zero strict upper triangle and unit diagonal.
    log_abs_det : ndarray, shape (batch,)
        ``log|det delta_free|`` from a sparse LU factorisation; 0 in exact
        arithmetic.
    lambda_min : ndarray, shape (batch,)
        Smallest eigenvalue of ``L_free``; positive iff it is positive definite.
    max_forward_difference : ndarray, shape (batch,)
        Largest absolute difference between the harmonic extension (sparse
        direct solve on :func:`as_cellular_sheaf`) and the forward pass.
    """

    unit_lower_triangular: np.ndarray
    log_abs_det: np.ndarray
    lambda_min: np.ndarray
    max_forward_difference: np.ndarray

    def ok(self, atol: float = 1e-8) -> bool:
        """Return whether every sample passes every check within ``atol``."""
        return bool(
            self.unit_lower_triangular.all()
            and np.abs(self.log_abs_det).max() <= atol
            and self.lambda_min.min() > 0
            and self.max_forward_difference.max() <= atol
        )

    def summary(self) -> dict[str, float]:
        """Worst case over the samples of every check."""
        return {
            "samples": float(len(self.lambda_min)),
            "all_unit_lower_triangular": float(self.unit_lower_triangular.all()),
            "max_abs_log_det": float(np.abs(self.log_abs_det).max()),
            "min_lambda_min": float(self.lambda_min.min()),
            "max_forward_difference": float(self.max_forward_difference.max()),
        }


def certify(net: NeuralSheaf, x: Any) -> Certificate:
    """Check, sample by sample, that the forward pass is the harmonic extension.

    Parameters
    ----------
    x : array_like, shape (n_0, batch)
        Inputs; each column is checked at its own activation pattern.

    Examples
    --------
    >>> import numpy as np
    >>> net = NeuralSheaf.random([3, 5, 2], seed=0)
    >>> certify(net, np.ones((3, 2))).ok()
    True
    """
    x = to_numpy(net.check_input(x))
    numpy_net = _numpy_net(net)
    batch = x.shape[1]
    triangular = np.zeros(batch, dtype=bool)
    log_det = np.zeros(batch)
    lam_min = np.zeros(batch)
    difference = np.zeros(batch)
    for j in range(batch):
        column = x[:, j : j + 1]
        delta = free_coboundary(numpy_net, column)
        upper = sp.triu(delta, k=1)
        triangular[j] = upper.count_nonzero() == 0 and np.all(delta.diagonal() == 1)
        lu = splu(sp.csc_matrix(delta))
        log_det[j] = np.sum(np.log(np.abs(lu.U.diagonal())))
        lam_min[j] = extreme_eigenvalues(numpy_net, column)[0][0]

        sheaf, _, values = as_cellular_sheaf(numpy_net, column)
        harmonic = sheaf.harmonic_extension(values)
        fp = numpy_net.forward(column)
        gaps = []
        for vertex in numpy_net.free_vertices:
            if vertex == "y_out":
                top = harmonic[f"z{numpy_net.depth + 1}"].reshape(-1, 1)
                value = apply_output(np, numpy_net.output, top)[:, 0]
            else:
                value = harmonic[vertex][: numpy_net.stalk_dim(vertex)]
            gaps.append(np.max(np.abs(value - fp[vertex][:, 0])))
        difference[j] = max(gaps)
    return Certificate(triangular, log_det, lam_min, difference)
