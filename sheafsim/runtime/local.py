"""Vertex-local pieces of the actor runtime: message inbox, schedule, integrators.

Nothing here touches Ray. A vertex actor combines an :class:`Inbox` of the
restricted values its neighbours sent, a schedule that decides which messages a
step uses, and a local integrator that advances its own stalk. The integrators
repeat :mod:`sheafsim.integrators` operation for operation on one vertex, so the
actor run matches :func:`sheafsim.dynamics.diffuse` to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sheafsim.pins import ResolvedPin

__all__ = ["Inbox", "SyncSchedule", "LocalEuler", "LocalNesterov", "make_local"]


@dataclass
class _EdgeMessages:
    by_step: dict[int, np.ndarray] = field(default_factory=dict)
    static_from: int | None = None
    static_value: np.ndarray | None = None


class Inbox:
    """Restricted values ``F_{u◁e} x_u`` received on each incident edge, by step.

    A message tagged with step ``t`` is the neighbour's restricted value at the
    point where step ``t + 1`` evaluates its forces. A static message is valid
    for every step from ``from_step`` on. Pinned neighbours send one static
    message instead of one message per step.
    """

    def __init__(self, edges: list[str]) -> None:
        self._edges = {edge: _EdgeMessages() for edge in edges}

    def put(self, edge: str, step: int, value: np.ndarray) -> None:
        """Store the message of ``edge`` for ``step``."""
        self._edges[edge].by_step[step] = value

    def put_static(self, edge: str, from_step: int, value: np.ndarray) -> None:
        """Store a message of ``edge`` that holds for every step >= ``from_step``."""
        messages = self._edges[edge]
        messages.static_from = from_step
        messages.static_value = value

    def has(self, edge: str, step: int) -> bool:
        """Return whether the message of ``edge`` for ``step`` has arrived."""
        messages = self._edges[edge]
        if step in messages.by_step:
            return True
        return messages.static_from is not None and step >= messages.static_from

    def get(self, edge: str, step: int) -> np.ndarray:
        """Return the message of ``edge`` for ``step``, or raise KeyError if missing."""
        messages = self._edges[edge]
        if step in messages.by_step:
            return messages.by_step[step]
        if messages.static_from is not None and step >= messages.static_from:
            assert messages.static_value is not None
            return messages.static_value
        raise KeyError(f"no message on edge {edge!r} for step {step}")

    def discard_through(self, step: int) -> None:
        """Delete the per-step messages of every step <= ``step``."""
        for messages in self._edges.values():
            for old in [s for s in messages.by_step if s <= step]:
                del messages.by_step[old]

    def pending_count(self) -> int:
        """Number of stored per-step messages, over all edges."""
        return sum(len(m.by_step) for m in self._edges.values())


class SyncSchedule:
    """Synchronous schedule: step ``t + 1`` uses exactly the step-``t`` messages.

    A vertex waits until every incident edge has its neighbour's step-``t``
    message. There is no global barrier. Vertices drift apart by at most their
    graph distance, and the coordinator's permit bounds how far any vertex runs
    ahead of the last step the coordinator has checked.

    An asynchronous schedule would implement the same two methods and pick the
    latest message no older than a staleness bound.
    """

    name = "sync"

    def ready(self, inbox: Inbox, edges: list[str], step: int) -> bool:
        """Return whether every message that step ``step + 1`` needs has arrived."""
        return all(inbox.has(edge, step) for edge in edges)

    def select(self, inbox: Inbox, edges: list[str], step: int) -> list[np.ndarray]:
        """Return the messages of step ``step`` in ``edges`` order and drop older."""
        selected = [inbox.get(edge, step) for edge in edges]
        inbox.discard_through(step)
        return selected


class LocalEuler:
    """Forward Euler ``c <- c + h f(c)`` on one vertex (arXiv:2603.14831).

    The one-step change is ``h * max|f|``, as in :mod:`sheafsim.integrators`.
    """

    def __init__(self, value: np.ndarray, step_size: float) -> None:
        self.h = step_size

    def evaluation_point(self, value: np.ndarray) -> np.ndarray:
        """Return the point at which the next step evaluates forces."""
        return value

    def advance(
        self, value: np.ndarray, point: np.ndarray, force: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Return the new stalk and this vertex's one-step change."""
        new = value + self.h * force
        return new, self.h * float(np.max(np.abs(force)))

    def pin_previous(self, pins: list[ResolvedPin]) -> None:
        """Write hard pins into the kept previous stalk; Euler keeps none."""


class LocalNesterov:
    """Nesterov's method with adaptive restart on one vertex, one counter per column.

    The look-ahead point is ``y = c + mu (c - c_prev)`` with
    ``mu = (t - 1) / (t + 2)``. The counter ``t`` of a column restarts at 1 when
    ``<f(y), c_next - c> < 0``. The one-step change is the larger of
    ``max|c_next - c|`` and ``h * max|f(y)|``.
    """

    def __init__(self, value: np.ndarray, step_size: float) -> None:
        self.h = step_size
        self.previous = value + 0.0
        self.counter = np.ones_like(value[:1])

    def evaluation_point(self, value: np.ndarray) -> np.ndarray:
        """Return the look-ahead point ``c + mu (c - c_prev)``."""
        mu = (self.counter - 1.0) / (self.counter + 2.0)
        return value + mu * (value - self.previous)

    def advance(
        self, value: np.ndarray, point: np.ndarray, force: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Return the new stalk and this vertex's one-step change."""
        h = self.h
        new = point + h * force
        change = new - value
        uphill = np.sum(force * change, axis=0, keepdims=True) < 0
        self.counter = np.where(uphill, 1.0, self.counter + 1.0)
        self.previous = value
        max_change = max(
            float(np.max(np.abs(change))), h * float(np.max(np.abs(force)))
        )
        return new, max_change

    def pin_previous(self, pins: list[ResolvedPin]) -> None:
        """Write hard pins into the previous stalk ``c_prev``.

        :func:`sheafsim.dynamics.diffuse` pins the old state along with the new
        one after step 1 of an unpinned start, so the momentum term of step 2
        does not pull pinned coordinates off their values.
        """
        self.previous = self.previous + 0.0
        for pin in pins:
            self.previous[pin.index] = pin.value


LOCAL_INTEGRATORS = ("euler", "nesterov")


def make_local(
    integrator: str, value: np.ndarray, step_size: float
) -> LocalEuler | LocalNesterov:
    """Create the vertex-local integrator ``integrator`` for the initial stalk."""
    if integrator == "euler":
        return LocalEuler(value, step_size)
    if integrator == "nesterov":
        return LocalNesterov(value, step_size)
    raise ValueError(
        f"integrator {integrator!r} has no vertex-local version; "
        f"use one of {LOCAL_INTEGRATORS}"
    )
