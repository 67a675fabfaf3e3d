"""Heat equation on a general cellular sheaf, with hard and soft pins.

The force on vertex ``v`` is ``-sum_{e ∋ v} F_{v◁e}^T (F_{v◁e} x_v - F_{u◁e} x_u)``,
that is ``-(L x)_v`` for fixed maps (arXiv:2603.14831). Hard-pinned coordinates
are boundary data, so the flow converges to the harmonic extension of the pinned
values whenever the relative cohomology ``H^0(G, U; F)`` vanishes. The stopping
rule and statuses are those of :func:`sheafsim.diffuse`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.sparse.linalg import eigsh

from sheafsim.dynamics import (
    DiffusionResult,
    _apply_hard_pins,
    _check_integrator,
    _check_record_at,
    _check_steps,
    _finish,
    _integrate,
    _positive,
    _Recorder,
)
from sheafsim.errors import InvalidValueError, StepSizeError
from sheafsim.integrators import make_integrator, stability_limit
from sheafsim.pins import HardPin, ResolvedPin, SoftPin, resolve_pins
from sheafsim.sheaf import CellularSheaf

__all__ = ["diffuse_sheaf"]


def _edge_name(edge: tuple[Hashable, Hashable]) -> str:
    return f"{edge[0]}-{edge[1]}"


class _SheafSystem:
    """Local forces of a cellular sheaf with pins folded in."""

    def __init__(
        self,
        sheaf: CellularSheaf,
        names: list[Hashable],
        hard: list[ResolvedPin],
        soft: list[ResolvedPin],
    ) -> None:
        self.xp = np
        self.sheaf = sheaf
        self.names = names
        position = {v: i for i, v in enumerate(names)}
        self.hard = [(position[p.vertex], p) for p in hard]
        self.soft = [(position[p.vertex], p) for p in soft]
        self.hard_pins = hard
        self.last_masks: list[Any] = []

    def forces(self, values: list[Any]) -> list[Any]:
        by_vertex = self.sheaf.local_forces(dict(zip(self.names, values, strict=True)))
        forces = [by_vertex[v] for v in self.names]
        for i, pin in self.soft:
            forces[i][pin.index] -= pin.gamma * (values[i][pin.index] - pin.value)
        for i, pin in self.hard:
            forces[i][pin.index] = 0.0
        return forces

    def masks(self, values: list[Any]) -> list[Any]:
        return []

    def discord(self, values: list[Any]) -> tuple[dict[str, float], float]:
        state = dict(zip(self.names, values, strict=True))
        per_edge = {_edge_name(e): d for e, d in self.sheaf.discord(state).items()}
        batch = values[0].shape[1]
        penalty = 0.0
        for i, pin in self.soft:
            gap = values[i][pin.index] - pin.value
            penalty += pin.gamma * float(np.sum(gap * gap)) / batch
        return per_edge, 0.5 * (sum(per_edge.values()) + penalty)


def _lambda_max(sheaf: CellularSheaf, state: dict, hard: list[ResolvedPin]) -> float:
    boundary: dict[Any, Any] = {p.vertex: p.index.tolist() for p in hard}
    column = {v: value[:, 0] for v, value in state.items()}
    laplacian = sheaf.laplacian(column if sheaf.is_state_dependent else None)
    free, _ = sheaf.split_coordinates(boundary)
    block = laplacian[free][:, free]
    if block.shape[0] <= 500:
        return float(np.linalg.eigvalsh(block.toarray())[-1])
    return float(eigsh(block.tocsc(), k=1, which="LA", return_eigenvectors=False)[0])


def _initial_values(
    sheaf: CellularSheaf, state: Mapping[Hashable, Any]
) -> tuple[list[Hashable], list[np.ndarray]]:
    """Check the initial state against ``sheaf`` and copy it to (d_v, batch) arrays.

    Returns the vertices in the sheaf's order and their values in that order.
    """
    names = list(sheaf.vertices)
    missing = [v for v in names if v not in state]
    if missing:
        raise InvalidValueError(
            f"initial state is missing vertices {missing}; give every vertex a value"
        )
    values = []
    for v in names:
        value = np.array(state[v], dtype=np.float64)
        value = value.reshape(-1, 1) if value.ndim == 1 else value
        if value.ndim != 2 or value.shape[0] != sheaf.stalk_dim(v):
            raise InvalidValueError(
                f"initial state of {v!r} has shape {value.shape} but stalk {v!r} has "
                f"dimension {sheaf.stalk_dim(v)}; give shape (d_v,) or (d_v, batch)"
            )
        if not np.all(np.isfinite(value)):
            raise InvalidValueError(
                f"initial state of {v!r} contains NaN or infinite values"
            )
        values.append(value)
    batches = {v: value.shape[1] for v, value in zip(names, values, strict=True)}
    if len(set(batches.values())) > 1:
        raise InvalidValueError(
            f"initial state mixes batch sizes {batches}; give every vertex the same "
            "number of columns"
        )
    return names, values


def _check_sheaf_step_size(
    sheaf: CellularSheaf,
    names: list[Hashable],
    values: list[np.ndarray],
    hard: list[ResolvedPin],
    alpha: float,
    dt: float,
    integrator: str,
    momentum: float | None,
) -> None:
    """Raise StepSizeError if ``alpha * dt`` is past the integrator's stability limit.

    ``lambda_max`` is that of the free Laplacian at the first sample of
    ``values``, with the hard-pinned coordinates removed.
    """
    lam = _lambda_max(sheaf, dict(zip(names, values, strict=True)), hard)
    limit = stability_limit(integrator, momentum)
    if alpha * dt * lam >= limit:
        raise StepSizeError(
            f"alpha*dt = {alpha * dt:.4g} is too large for the {integrator} "
            f"integrator: the free Laplacian has lambda_max = {lam:.4g}, so "
            f"alpha*dt must stay below {limit / lam:.4g}. Use dt <= "
            f"{0.9 * limit / (alpha * lam):.3g}"
        )


def diffuse_sheaf(
    sheaf: CellularSheaf,
    state: Mapping[Hashable, Any],
    *,
    alpha: float = 1.0,
    dt: float = 0.1,
    tol: float = 1e-9,
    min_steps: int = 5,
    max_steps: int = 100_000,
    pins: Sequence[HardPin] = (),
    soft_pins: Sequence[SoftPin] = (),
    integrator: str = "euler",
    momentum: float | None = None,
    record_every: int = 0,
    record_at: Iterable[int] = (),
    check_step: bool = True,
    raise_on_failure: bool = False,
) -> DiffusionResult:
    """Diffuse a cellular sheaf from ``state`` until it settles.

    Parameters
    ----------
    sheaf : CellularSheaf
    state : mapping of vertex to array, shape (d_v, batch) or (d_v,)
        Initial value of every vertex.
    pins, soft_pins : sequences of HardPin, SoftPin
        Hard pins are applied to the initial state and define the boundary.
    alpha, dt, tol, min_steps, max_steps, integrator, momentum, record_every,
    record_at, check_step, raise_on_failure
        As in :func:`sheafsim.diffuse`. The step-size check computes
        ``lambda_max`` of the free Laplacian at the first sample.

    Returns
    -------
    DiffusionResult
        ``output`` is ``None``; ``trace`` has one list per edge named
        ``"u-v"``; ``crossings`` is empty.
    """
    alpha = _positive("alpha", alpha)
    dt = _positive("dt", dt)
    tol = _positive("tol", tol)
    min_steps, max_steps = _check_steps(min_steps, max_steps)
    _check_integrator(integrator)
    names, values = _initial_values(sheaf, state)
    batch = values[0].shape[1]
    dims = {v: sheaf.stalk_dim(v) for v in names}
    hard, soft = resolve_pins(pins, soft_pins, dims, batch, np, values[0])
    _apply_hard_pins(names, values, hard)  # type: ignore[arg-type]

    if check_step:
        _check_sheaf_step_size(
            sheaf, names, values, hard, alpha, dt, integrator, momentum
        )

    system = _SheafSystem(sheaf, names, hard, soft)
    stepper = make_integrator(integrator, np, values, alpha * dt, momentum)
    recorder = _Recorder(system, record_every, _check_record_at(record_at))  # type: ignore[arg-type]
    recorder.record(0, values)
    status, message, steps, values, max_change, crossings, wall = _integrate(
        system,
        stepper,
        values,
        recorder,
        tol=tol,
        min_steps=int(min_steps),
        max_steps=int(max_steps),
        advice=f"lower dt (now {dt}) or alpha (now {alpha})",
        pin_initial_state=True,
        record_crossings=False,
    )
    result = DiffusionResult(
        status=status,
        steps=steps,
        state=dict(zip(names, values, strict=True)),
        output=None,
        max_update=float(max_change),
        trace=recorder.trace,
        crossings=crossings,
        wall_time_s=wall,
        message=message,
        integrator=integrator,
    )
    return _finish(result, raise_on_failure)
