"""Array namespace selection shared by every numerical kernel.

Kernels are written against the Python array API standard, so the same code runs
on numpy arrays and on torch tensors (CPU or CUDA). For numpy inputs the plain
``numpy`` module is returned, because numpy 2 implements the standard in its main
namespace and the compatibility wrappers would only add call overhead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["namespace", "to_numpy"]


def namespace(*arrays: Any) -> Any:
    """Return the array namespace of ``arrays`` (``numpy`` for numpy arrays)."""
    if all(isinstance(a, np.ndarray | np.generic | float | int) for a in arrays):
        return np
    import array_api_compat

    return array_api_compat.array_namespace(*arrays)


def to_numpy(array: Any) -> np.ndarray:
    """Copy ``array`` (numpy or torch, any device) to a host numpy array."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    return np.asarray(array)
