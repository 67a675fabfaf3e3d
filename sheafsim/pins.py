"""Hard and soft pins on free vertices.

A hard pin overwrites chosen coordinates of a vertex with target values after
every step, turning them into boundary data. A soft pin adds the force
``-gamma * (v - target)`` to the chosen coordinates, which is a penalty edge to a
pinned target vertex. The equilibrium is the constrained least-squares harmonic
extension, and constraints travel both up- and downstream (arXiv:2603.14831).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheafsim._backend import to_numpy
from sheafsim.errors import InvalidValueError, ShapeError

__all__ = ["HardPin", "SoftPin", "ResolvedPin", "resolve_pins"]


@dataclass(frozen=True)
class HardPin:
    """Hold coordinates of a free vertex at fixed values.

    Parameters
    ----------
    vertex : str
        Vertex name, for example ``"z1"``, ``"a2"`` or ``"y_out"``.
    coords : sequence of int, optional
        Coordinates to pin; ``None`` pins the whole stalk.
    value : float or array_like
        A scalar, one value per coordinate (shape ``(n_coords,)``), or one value
        per coordinate and sample (shape ``(n_coords, batch)``).
    """

    vertex: str
    coords: Sequence[int] | None = None
    value: Any = 0.0


@dataclass(frozen=True)
class SoftPin:
    """Pull coordinates of a free vertex towards target values with strength gamma.

    Adds ``-gamma * (v[coords] - value)`` to the heat force of ``vertex``.
    ``value`` takes the same shapes as for :class:`HardPin`.
    """

    vertex: str
    coords: Sequence[int] | None = None
    value: Any = 0.0
    gamma: float = 1.0


@dataclass
class ResolvedPin:
    """A pin checked against a sheaf: coordinate indices and a (n, batch) target."""

    vertex: str
    index: np.ndarray
    value: Any
    gamma: float = 0.0
    full: bool = False


def _resolve_one(
    pin: HardPin | SoftPin,
    dims: dict[Any, int],
    batch: int,
    xp: Any,
    like: Any,
) -> ResolvedPin:
    if pin.vertex not in dims:
        raise InvalidValueError(
            f"cannot pin vertex {pin.vertex!r}; pins apply to free vertices "
            f"{sorted(dims)}"
        )

    # Coordinates: all of the stalk, or distinct integers within it.
    dim = dims[pin.vertex]
    if pin.coords is None:
        index = np.arange(dim)
    else:
        raw = list(pin.coords)
        if not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) for c in raw
        ):
            raise InvalidValueError(
                f"pin on {pin.vertex!r} has coordinates {raw}; coordinates must be "
                "integers"
            )
        index = np.asarray(raw, dtype=np.int64).reshape(-1)
        bad = index[(index < 0) | (index >= dim)]
        if bad.size:
            raise ShapeError(
                f"pin on {pin.vertex!r} names coordinate {int(bad[0])} but the stalk "
                f"has dimension {dim}; use coordinates 0..{dim - 1}"
            )
        if len(np.unique(index)) != len(index):
            raise InvalidValueError(
                f"pin on {pin.vertex!r} repeats coordinates {index.tolist()}"
            )

    # Shapes are resolved on the host; the target then moves to like's device.
    n = len(index)
    try:
        value = np.asarray(to_numpy(pin.value), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValueError(
            f"pin value on {pin.vertex!r} is {pin.value!r}; give a number or an "
            "array of numbers"
        ) from None
    if value.ndim == 0:
        target = np.full((n, batch), float(value))
    elif value.ndim == 1 and value.shape[0] == n:
        target = np.broadcast_to(value.reshape(n, 1), (n, batch))
    elif value.ndim == 2 and tuple(value.shape) in ((n, batch), (1, batch)):
        target = np.broadcast_to(value, (n, batch))
    else:
        raise ShapeError(
            f"pin value on {pin.vertex!r} has shape {tuple(value.shape)}; give a "
            f"scalar, shape ({n},) for one value per coordinate, or ({n}, {batch}) "
            "for one value per coordinate and sample"
        )
    if not np.all(np.isfinite(target)):
        raise InvalidValueError(f"pin value on {pin.vertex!r} is NaN or infinite")

    if xp is np:
        target = np.ascontiguousarray(target, dtype=like.dtype)
    else:
        target = xp.asarray(
            np.ascontiguousarray(target), dtype=like.dtype, device=like.device
        )

    gamma = float(getattr(pin, "gamma", 0.0))
    if isinstance(pin, SoftPin) and not (gamma > 0 and np.isfinite(gamma)):
        raise InvalidValueError(
            f"soft pin on {pin.vertex!r} has gamma={pin.gamma}; gamma must be a "
            "positive finite number"
        )
    return ResolvedPin(pin.vertex, index, target, gamma, full=(n == dim))


def resolve_pins(
    pins: Sequence[HardPin],
    soft_pins: Sequence[SoftPin],
    dims: dict[Any, int],
    batch: int,
    xp: Any,
    like: Any,
) -> tuple[list[ResolvedPin], list[ResolvedPin]]:
    """Check pins against the free stalk dimensions ``dims`` and a batch size.

    Soft-pinned coordinates that are also hard-pinned are dropped with a warning,
    because the hard pin overrides them.
    """
    hard = []
    claimed: dict[Any, set[int]] = {}
    for pin in pins:
        if not isinstance(pin, HardPin):
            raise InvalidValueError(f"pins must be HardPin objects, got {pin!r}")
        resolved_hard = _resolve_one(pin, dims, batch, xp, like)
        pinned_coords = claimed.setdefault(pin.vertex, set())
        overlap = pinned_coords.intersection(int(i) for i in resolved_hard.index)
        if overlap:
            raise InvalidValueError(
                f"two hard pins on {pin.vertex!r} both pin coordinates "
                f"{sorted(overlap)}; pin each coordinate once"
            )
        pinned_coords.update(int(i) for i in resolved_hard.index)
        hard.append(resolved_hard)
    soft = []
    for soft_pin in soft_pins:
        if not isinstance(soft_pin, SoftPin):
            raise InvalidValueError(
                f"soft_pins must be SoftPin objects, got {soft_pin!r}"
            )
        resolved = _resolve_one(soft_pin, dims, batch, xp, like)
        hard_coords = {
            int(i) for h in hard if h.vertex == soft_pin.vertex for i in h.index
        }
        keep = np.array([int(i) not in hard_coords for i in resolved.index], dtype=bool)
        if not keep.all():
            warnings.warn(
                f"soft pin on {soft_pin.vertex!r} coordinates "
                f"{resolved.index[~keep].tolist()} is ignored there because those "
                "coordinates are hard-pinned",
                stacklevel=3,
            )
            if not keep.any():
                continue
            rows = np.nonzero(keep)[0]
            resolved = ResolvedPin(
                resolved.vertex,
                resolved.index[keep],
                resolved.value[rows],
                resolved.gamma,
                full=False,
            )
        soft.append(resolved)
    return hard, soft
