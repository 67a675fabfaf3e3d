"""Time integrators of the sheaf heat equation.

Every integrator uses only vertex-local information: a vertex needs its own
current and previous stalk, its own force, and nothing global, so the same rules
run on Ray vertex actors. ``h = alpha * dt`` below.

``euler``
    The scheme of arXiv:2603.14831: ``c <- c + h * f(c)``. Stable on a fixed
    pattern iff ``h < 2 / lambda_max``.
``nesterov``
    Nesterov's accelerated gradient with adaptive restart (O'Donoghue and
    Candes, 2015) applied per vertex and per sample:
    ``y = c + mu * (c - c_prev)``, ``c_next = y + h * f(y)``, with
    ``mu_t = (t - 1) / (t + 2)``. The counter ``t`` of a vertex and sample
    restarts at 1 whenever ``<f(y), c_next - c> < 0``, that is, when the momentum
    points uphill in the energy. Safe for ``h < 1 / lambda_max``. Its error
    decays roughly like ``(1 - sqrt(h * lambda_min))^t`` instead of
    ``(1 - h * lambda_min)^t``.
``heavy_ball``
    Polyak's heavy ball with a constant momentum ``m``:
    ``c_next = c + h * f(c) + m * (c - c_prev)``. Stable on a fixed pattern iff
    ``h * lambda_max < 2 * (1 + m)``.

The stopping quantity of the momentum schemes is the larger of the one-step
change and the Euler change ``h * max|f|``, so a run cannot stop at the turning
point of an oscillation.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["INTEGRATORS", "make_integrator", "stability_limit"]

INTEGRATORS = ("euler", "nesterov", "heavy_ball")
DEFAULT_HEAVY_BALL_MOMENTUM = 0.9


class ForceSystem(Protocol):
    """A system that computes per-vertex forces from per-vertex values."""

    last_masks: list[Any]

    def forces(self, values: list[Any]) -> list[Any]: ...


def stability_limit(integrator: str, momentum: float | None = None) -> float:
    """Return the largest stable ``h * lambda_max`` of ``integrator``."""
    if integrator == "euler":
        return 2.0
    if integrator == "nesterov":
        return 1.0
    m = DEFAULT_HEAVY_BALL_MOMENTUM if momentum is None else momentum
    return 2.0 * (1.0 + m)


def _max_abs(xp: Any, arrays: list[Any]) -> float:
    # max|a| as max(max a, -min a) avoids allocating |a| on the hot path.
    # Python's max() drops NaN, so NaN is returned explicitly.
    largest = 0.0
    for a in arrays:
        top, bottom = float(a.max()), float(a.min())
        if top != top or bottom != bottom:
            return math.nan
        largest = max(largest, top, -bottom)
    return largest


def _nan_max(first: float, second: float) -> float:
    return math.nan if math.isnan(first) or math.isnan(second) else max(first, second)


class _Euler:
    def __init__(self, xp: Any, step_size: float) -> None:
        self.xp = xp
        self.h = step_size

    def step(self, system: ForceSystem, values: list[Any]) -> tuple[list, float, list]:
        forces = system.forces(values)
        h = self.h
        new = [v + h * f for v, f in zip(values, forces, strict=True)]
        return new, h * _max_abs(self.xp, forces), system.last_masks


class _Nesterov:
    def __init__(self, xp: Any, values: list[Any], step_size: float) -> None:
        self.xp = xp
        self.h = step_size
        self.previous = [v + 0.0 for v in values]
        self.counter = [xp.ones_like(v[:1]) for v in values]

    def step(self, system: ForceSystem, values: list[Any]) -> tuple[list, float, list]:
        xp, h = self.xp, self.h
        mu = [(t - 1.0) / (t + 2.0) for t in self.counter]
        look = [
            v + m * (v - p) for v, m, p in zip(values, mu, self.previous, strict=True)
        ]
        forces = system.forces(look)
        new = [y + h * f for y, f in zip(look, forces, strict=True)]
        change = [n - v for n, v in zip(new, values, strict=True)]
        for i, (f, d) in enumerate(zip(forces, change, strict=True)):
            uphill = xp.sum(f * d, axis=0, keepdims=True) < 0
            self.counter[i] = xp.where(uphill, 1.0, self.counter[i] + 1.0)
        self.previous = values
        max_change = _nan_max(_max_abs(xp, change), h * _max_abs(xp, forces))
        return new, max_change, system.last_masks


class _HeavyBall:
    def __init__(self, xp: Any, values: list[Any], step_size: float, momentum: float):
        self.xp = xp
        self.h = step_size
        self.m = momentum
        self.previous = [v + 0.0 for v in values]

    def step(self, system: ForceSystem, values: list[Any]) -> tuple[list, float, list]:
        xp, h, m = self.xp, self.h, self.m
        forces = system.forces(values)
        new = [
            v + h * f + m * (v - p)
            for v, f, p in zip(values, forces, self.previous, strict=True)
        ]
        change = [n - v for n, v in zip(new, values, strict=True)]
        self.previous = values
        max_change = _nan_max(_max_abs(xp, change), h * _max_abs(xp, forces))
        return new, max_change, system.last_masks


def make_integrator(
    name: str, xp: Any, values: list[Any], step_size: float, momentum: float | None
) -> Any:
    """Create the stepper ``name`` for the initial ``values`` and ``h``."""
    if name == "euler":
        return _Euler(xp, step_size)
    if name == "nesterov":
        return _Nesterov(xp, values, step_size)
    m = DEFAULT_HEAVY_BALL_MOMENTUM if momentum is None else float(momentum)
    if not 0.0 <= m < 1.0:
        from sheafsim.errors import InvalidValueError

        raise InvalidValueError(f"momentum={m} is invalid; use 0 <= momentum < 1")
    return _HeavyBall(xp, values, step_size, m)
