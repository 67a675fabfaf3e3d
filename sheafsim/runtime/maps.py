"""Restriction maps owned by one end of an edge.

A vertex actor stores only its own side ``F_{v◁e}`` of every incident edge ``e``.
Each map turns the vertex stalk ``x_v`` of shape ``(dim_v, batch)`` into the
edge stalk ``F x_v`` of shape ``(dim_e, batch)`` (:meth:`RestrictionMap.apply`)
and pulls an edge residual back to the vertex (:meth:`RestrictionMap.pullback`,
``J^T residual`` with ``J`` the Jacobian of the map at ``x_v``). With these two
operations the heat force on ``v`` is

    f_v = - sum_e pullback_e(x_v, apply_e(x_v) - m_e),

where ``m_e = F_{u◁e} x_u`` is the restricted value sent by the neighbour ``u``
across ``e``. This is the negative gradient in ``x_v`` of the edge energy
``1/2 sum_e |F_{v◁e} x_v - F_{u◁e} x_u|^2`` of Bosca and Ghrist
(arXiv:2603.14831). Linear maps give the usual sheaf Laplacian. The ReLU mask
and the output nonlinearity are the state-dependent maps of the neural sheaf.

Maps are built on the driver with host numpy float64 arrays.
:meth:`RestrictionMap.to_backend` returns a copy on the vertex actor's
:class:`~sheafsim.backend.ArrayBackend`. Every kernel is written once against
the array API and runs in the namespace of the stalk it receives.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from sheafsim._backend import namespace
from sheafsim.backend import ArrayBackend
from sheafsim.errors import InvalidValueError, ShapeError
from sheafsim.neural import apply_output, output_vjp

__all__ = [
    "owned_array",
    "RestrictionMap",
    "IdentityMap",
    "MatrixMap",
    "AffineMap",
    "ReluMaskMap",
    "OutputMap",
]


def owned_array(array: Any, backend: ArrayBackend) -> Any:
    """Return ``array`` on ``backend``, as an array the caller owns.

    Ray hands an actor its arguments as read-only numpy arrays. A numpy
    backend keeps them as they are, because the vertex never writes into the
    arrays of its spec. A torch backend gets a copy, so that its tensors never
    share read-only memory, which torch does not support.
    """
    if backend.name == "numpy":
        return backend.asarray(array)
    return backend.asarray(np.array(array, dtype=backend.dtype))


class RestrictionMap:
    """One end of an edge: a map from the vertex stalk to the edge stalk.

    Subclasses implement :meth:`apply` and :meth:`pullback`. Every map is a
    small picklable object, so it travels to the actor that owns it. Arrays
    are numpy arrays or torch tensors, shape ``(dim, batch)``.
    """

    def apply(self, value: Any) -> Any:
        """Map the vertex stalk ``value`` of shape (dim_v, batch) to the edge."""
        raise NotImplementedError

    def pullback(self, value: Any, residual: Any) -> Any:
        """Return ``J^T residual`` of shape (dim_v, batch).

        Parameters
        ----------
        value : array, shape (dim_v, batch)
            Vertex stalk at which the Jacobian ``J`` is taken.
        residual : array, shape (dim_e, batch)
            Edge residual ``apply(value) - m_e``.
        """
        raise NotImplementedError

    def pullback_applied(self, value: Any, applied: Any, residual: Any) -> Any:
        """Return :meth:`pullback` of ``residual``, given ``applied = apply(value)``.

        A map whose Jacobian depends on its output overrides this, so that the
        vertex actor does not compute that output a second time. The result
        equals ``pullback(value, residual)`` bit for bit.
        """
        return self.pullback(value, residual)

    def to_backend(self, backend: ArrayBackend) -> RestrictionMap:
        """Return this map with its arrays on ``backend``.

        A map without arrays returns itself.
        """
        return self

    def edge_dim(self, vertex_dim: int) -> int:
        """Return the edge stalk dimension for a vertex stalk of ``vertex_dim``."""
        return vertex_dim

    def stored_bytes(self, itemsize: int) -> int:
        """Return the bytes of the map's own arrays at ``itemsize`` bytes per value."""
        return 0


class IdentityMap(RestrictionMap):
    """Identity map, the downstream end of every edge of the neural sheaf."""

    def apply(self, value: Any) -> Any:
        return value

    def pullback(self, value: Any, residual: Any) -> Any:
        return residual

    def __repr__(self) -> str:
        return "IdentityMap()"


class MatrixMap(RestrictionMap):
    """Fixed linear map ``x -> M x`` of a general cellular sheaf.

    A scipy.sparse ``M`` is kept sparse, as a ``csr_array``, and becomes a
    sparse COO tensor on a torch backend. On numpy both kinds are applied with
    the same products as :meth:`sheafsim.sheaf.CellularSheaf.local_forces`, so
    the results match it bit for bit.

    Parameters
    ----------
    matrix : array_like or scipy.sparse matrix, shape (dim_e, dim_v)
    """

    def __init__(self, matrix: Any) -> None:
        if sp.issparse(matrix):
            matrix = sp.csr_array(matrix, dtype=np.float64)
        else:
            matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2:
            raise ShapeError(
                f"restriction matrix has shape {matrix.shape}; it must be 2-D "
                "(edge dimension, vertex dimension)"
            )
        self.matrix = matrix

    def apply(self, value: Any) -> Any:
        # scipy.sparse @ ndarray returns an ndarray, so no conversion is needed.
        return self.matrix @ value

    def pullback(self, value: Any, residual: Any) -> Any:
        return self.matrix.T @ residual

    def to_backend(self, backend: ArrayBackend) -> MatrixMap:
        moved = copy.copy(self)
        if not sp.issparse(self.matrix):
            moved.matrix = owned_array(self.matrix, backend)
        elif backend.name == "numpy":
            moved.matrix = sp.csr_array(self.matrix, dtype=backend.dtype)
        else:
            moved.matrix = _torch_sparse(self.matrix, backend)
        return moved

    def edge_dim(self, vertex_dim: int) -> int:
        return int(self.matrix.shape[0])

    def stored_bytes(self, itemsize: int) -> int:
        if sp.issparse(self.matrix):
            # COO on torch: each stored value has two int64 indices.
            return int(self.matrix.nnz) * (itemsize + 16)
        return int(self.matrix.size) * itemsize

    def __repr__(self) -> str:
        return f"MatrixMap(shape={self.matrix.shape})"


def _torch_sparse(matrix: Any, backend: ArrayBackend) -> Any:
    """Return the scipy.sparse ``matrix`` as a coalesced torch COO tensor."""
    import torch

    coo = sp.coo_array(matrix)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(np.asarray(coo.data, dtype=backend.dtype))
    tensor = torch.sparse_coo_tensor(
        indices, values, coo.shape, check_invariants=True
    ).coalesce()
    backend.check_device()
    return tensor.to(backend.device)


class AffineMap(RestrictionMap):
    """Upstream end ``a -> W a + b`` of an affine edge.

    Parameters
    ----------
    weight : array_like, shape (n_l, n_{l-1})
    bias : array_like, shape (n_l, 1)
    """

    def __init__(self, weight: Any, bias: Any) -> None:
        weight = np.asarray(weight, dtype=np.float64)
        bias = np.asarray(bias, dtype=np.float64)
        if weight.ndim != 2 or bias.shape != (weight.shape[0], 1):
            raise ShapeError(
                f"affine map needs W of shape (n_out, n_in) and b of shape "
                f"(n_out, 1); got W {weight.shape} and b {bias.shape}"
            )
        self.weight = weight
        self.bias = bias

    def apply(self, value: Any) -> Any:
        return self.weight @ value + self.bias

    def pullback(self, value: Any, residual: Any) -> Any:
        # Same transposed view as the in-process kernel, so the results match
        # bit for bit.
        return self.weight.mT @ residual

    def learn(self, value: Any, residual: Any, rate: float) -> None:
        """Take one local weight step ``W -= rate r a^T``, ``b -= rate sum r``.

        ``value`` is the upstream stalk ``a`` and ``residual`` the edge
        residual ``r = W a + b - z`` at the same state, summed over the batch
        as in :class:`sheafsim.training.TrainingStep`, so both agree bit for
        bit on numpy.
        """
        xp = namespace(residual)
        # New arrays, because Ray may hand an actor read-only arrays.
        self.weight = self.weight - rate * (residual @ value.mT)
        self.bias = self.bias - rate * xp.sum(residual, axis=1, keepdims=True)

    def to_backend(self, backend: ArrayBackend) -> AffineMap:
        moved = copy.copy(self)
        moved.weight = owned_array(self.weight, backend)
        moved.bias = owned_array(self.bias, backend)
        return moved

    def edge_dim(self, vertex_dim: int) -> int:
        return int(self.weight.shape[0])

    def stored_bytes(self, itemsize: int) -> int:
        return (int(self.weight.shape[0]) * int(self.weight.shape[1] + 1)) * itemsize

    def __repr__(self) -> str:
        return f"AffineMap(shape={tuple(self.weight.shape)})"


class ReluMaskMap(RestrictionMap):
    """Upstream end ``z -> R z`` of an activation edge, ``R = diag(1[z >= 0])``.

    The mask is taken from the stalk passed in, so the pre-activation vertex
    recomputes it from its own current state at every step.
    """

    def apply(self, value: Any) -> Any:
        return self.mask(value) * value

    def pullback(self, value: Any, residual: Any) -> Any:
        return self.mask(value) * residual

    @staticmethod
    def mask(value: Any) -> Any:
        """Return the 0/1 float mask ``1[value >= 0]`` of the same shape."""
        return namespace(value).astype(value >= 0, value.dtype)

    def __repr__(self) -> str:
        return "ReluMaskMap()"


class OutputMap(RestrictionMap):
    """Upstream end ``z -> phi(z)`` of the output edge (sigmoid or softmax).

    Parameters
    ----------
    output : {"sigmoid", "softmax"}
        Output nonlinearity ``phi``.
    mode : {"jacobian", "identity"}
        ``"jacobian"`` pulls the residual back with ``J_phi(z)^T`` (gradient flow
        of the energy). ``"identity"`` passes it through unchanged, so the force
        on ``z_{k+1}`` is ``-(phi(z) - y_out)``.
    """

    def __init__(
        self,
        output: Literal["sigmoid", "softmax"],
        mode: Literal["jacobian", "identity"] = "jacobian",
    ) -> None:
        if output not in ("sigmoid", "softmax"):
            raise InvalidValueError(
                f"output map needs output 'sigmoid' or 'softmax', got {output!r}"
            )
        if mode not in ("jacobian", "identity"):
            raise InvalidValueError(
                f"unknown output_mode {mode!r}; use 'jacobian' or 'identity'"
            )
        self.output = output
        self.mode = mode

    def apply(self, value: Any) -> Any:
        return apply_output(namespace(value), self.output, value)

    def pullback(self, value: Any, residual: Any) -> Any:
        if self.mode == "identity":
            return residual
        return self.pullback_applied(value, self.apply(value), residual)

    def pullback_applied(self, value: Any, applied: Any, residual: Any) -> Any:
        if self.mode == "identity":
            return residual
        return output_vjp(namespace(applied), self.output, applied, residual)

    def __repr__(self) -> str:
        return f"OutputMap(output={self.output!r}, mode={self.mode!r})"
