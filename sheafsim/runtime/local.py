"""Vertex-local pieces of the actor runtime: message inbox, schedules, integrators.

Nothing here touches Ray. A vertex actor combines an :class:`Inbox` of the
restricted values its neighbours sent, a schedule that decides which messages a
step uses, and a local integrator that advances its own stalk. The integrators
repeat :mod:`sheafsim.integrators` operation for operation on one vertex, so the
actor run matches :func:`sheafsim.dynamics.diffuse` to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from sheafsim._backend import namespace
from sheafsim.pins import ResolvedPin
from sheafsim.runtime.spec import DelayModel

__all__ = [
    "Inbox",
    "Selection",
    "SyncSchedule",
    "AsyncSchedule",
    "make_schedule",
    "DelaySampler",
    "LocalEuler",
    "LocalNesterov",
    "make_local",
]


@dataclass
class _EdgeMessages:
    by_step: dict[int, Any] = field(default_factory=dict)
    static_from: int | None = None
    static_value: Any = None


class Inbox:
    """Restricted values ``F_{u◁e} x_u`` received on each incident edge, by step.

    A message tagged with step ``t`` is the neighbour's restricted value at the
    point where step ``t + 1`` evaluates its forces. A static message is valid
    for every step from ``from_step`` on. Pinned neighbours send one static
    message instead of one message per step. Messages may arrive in any order.
    """

    def __init__(self, edges: list[str]) -> None:
        self._edges = {edge: _EdgeMessages() for edge in edges}

    def put(self, edge: str, step: int, value: Any) -> None:
        """Store the message of ``edge`` for ``step``."""
        self._edges[edge].by_step[step] = value

    def put_static(self, edge: str, from_step: int, value: Any) -> None:
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

    def get(self, edge: str, step: int) -> Any:
        """Return the message of ``edge`` for ``step``, or raise KeyError if missing."""
        messages = self._edges[edge]
        if step in messages.by_step:
            return messages.by_step[step]
        if messages.static_from is not None and step >= messages.static_from:
            assert messages.static_value is not None
            return messages.static_value
        raise KeyError(f"no message on edge {edge!r} for step {step}")

    def latest(
        self, edge: str, step: int, newest: int | None = None
    ) -> tuple[int | None, Any] | None:
        """Return ``(tag, value)`` of the latest usable message of ``edge``.

        A static message valid at ``step`` is returned with tag None.
        Otherwise this returns the per-step message with the largest tag that is
        at most ``newest`` (any tag when ``newest`` is None), or None if there
        is none.
        """
        messages = self._edges[edge]
        if messages.static_from is not None and step >= messages.static_from:
            assert messages.static_value is not None
            return None, messages.static_value
        tags = [tag for tag in messages.by_step if newest is None or tag <= newest]
        if not tags:
            return None
        tag = max(tags)
        return tag, messages.by_step[tag]

    def discard_through(self, step: int) -> None:
        """Delete the per-step messages of every step <= ``step``."""
        for messages in self._edges.values():
            for old in [s for s in messages.by_step if s <= step]:
                del messages.by_step[old]

    def discard_before(self, edge: str, step: int) -> None:
        """Delete the per-step messages of ``edge`` tagged before ``step``."""
        by_step = self._edges[edge].by_step
        for old in [s for s in by_step if s < step]:
            del by_step[old]

    def pending_count(self) -> int:
        """Number of stored per-step messages, over all edges."""
        return sum(len(m.by_step) for m in self._edges.values())


class Selection(NamedTuple):
    """Messages chosen for one step.

    Attributes
    ----------
    values : list of ndarray
        One message per incident edge, in edge order.
    staleness : int
        Max over edges of the vertex's own step minus the tag of the message
        used, or 0 if no message is older than the step. Static messages count
        as current.
    tags : list of int or None
        Step tag of each message used, None for a static message.
    """

    values: list[Any]
    staleness: int
    tags: list[int | None]


class SyncSchedule:
    """Synchronous schedule: step ``t + 1`` uses exactly the step-``t`` messages.

    A vertex waits until every incident edge has its neighbour's step-``t``
    message. There is no global barrier. Vertices drift apart by at most their
    graph distance, and the coordinator's permit bounds how far any vertex runs
    ahead of the last step the coordinator has checked.
    """

    name = "sync"

    def ready(self, inbox: Inbox, edges: list[str], step: int) -> bool:
        """Return whether every message that step ``step + 1`` needs has arrived."""
        return all(inbox.has(edge, step) for edge in edges)

    def select(self, inbox: Inbox, edges: list[str], step: int) -> Selection:
        """Return the messages of step ``step`` in ``edges`` order and drop older."""
        selected = [inbox.get(edge, step) for edge in edges]
        inbox.discard_through(step)
        tags: list[int | None] = [step] * len(edges)
        return Selection(selected, 0, tags)


class AsyncSchedule:
    """Asynchronous schedule: each step uses the latest messages the vertex has.

    Without a staleness bound, a vertex at step ``t`` uses the message with the
    largest tag on each edge, and it may step again on the same messages. It
    needs one message per edge before its first step.

    With a bound ``B``, every message a step uses is within ``B`` steps of the
    vertex's own step ``t``, in both directions. The vertex uses the latest
    message tagged at most ``t + B`` and waits until it has one tagged at
    least ``t - B``. A neighbour can run at most ``B + 1`` steps ahead, so the
    upper limit only skips that neighbour's newest message, and ``B = 0`` uses
    exactly the step-``t`` messages: the synchronous schedule. Static messages
    are never stale.
    """

    name = "async"

    def __init__(self, staleness_bound: int | None = None) -> None:
        if staleness_bound is not None and staleness_bound < 0:
            raise ValueError(f"staleness_bound={staleness_bound} must be >= 0")
        self.bound = staleness_bound

    def ready(self, inbox: Inbox, edges: list[str], step: int) -> bool:
        """Return whether every edge has a message that step ``step + 1`` may use."""
        return all(self._choose(inbox, edge, step) is not None for edge in edges)

    def tags(
        self, inbox: Inbox, edges: list[str], step: int
    ) -> list[int | None] | None:
        """Return the tags :meth:`select` would use, or None if it is not ready."""
        tags = []
        for edge in edges:
            chosen = self._choose(inbox, edge, step)
            if chosen is None:
                return None
            tags.append(chosen[0])
        return tags

    def select(self, inbox: Inbox, edges: list[str], step: int) -> Selection:
        """Return the latest usable messages and drop older ones on each edge."""
        values = []
        tags: list[int | None] = []
        staleness = 0
        for edge in edges:
            chosen = self._choose(inbox, edge, step)
            if chosen is None:
                raise KeyError(f"no usable message on edge {edge!r} at step {step}")
            tag, value = chosen
            if tag is not None:
                inbox.discard_before(edge, tag)
                staleness = max(staleness, step - tag)
            values.append(value)
            tags.append(tag)
        return Selection(values, staleness, tags)

    def _choose(
        self, inbox: Inbox, edge: str, step: int
    ) -> tuple[int | None, Any] | None:
        if self.bound is None:
            return inbox.latest(edge, step)
        chosen = inbox.latest(edge, step, newest=step + self.bound)
        if chosen is None:
            return None
        tag = chosen[0]
        if tag is not None and tag < step - self.bound:
            return None
        return chosen


SCHEDULE_NAMES = ("sync", "async")


def make_schedule(
    name: str, staleness_bound: int | None = None
) -> SyncSchedule | AsyncSchedule:
    """Create the schedule ``name``; ``staleness_bound`` applies to ``"async"``."""
    if name == "sync":
        return SyncSchedule()
    if name == "async":
        return AsyncSchedule(staleness_bound)
    raise ValueError(f"unknown schedule {name!r}; use one of {SCHEDULE_NAMES}")


class DelaySampler:
    """Seeded draws of one vertex's injected compute and message delays.

    A delay with mean ``m`` is ``m * U(1 - jitter, 1 + jitter)``. A mean of 0
    gives 0 without a draw. The compute mean is ``compute_s`` times the vertex's
    ``slowdown`` factor.

    Parameters
    ----------
    model : DelayModel
    vertex : str
        Vertex name, looked up in ``model.slowdown``.
    seed : numpy.random.SeedSequence
        This vertex's child of ``SeedSequence(model.seed)``.
    """

    def __init__(
        self, model: DelayModel, vertex: str, seed: np.random.SeedSequence
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.compute_mean = model.compute_s * float(model.slowdown.get(vertex, 1.0))
        self.message_mean = model.message_s
        self.jitter = model.jitter

    def compute_delay(self) -> float:
        """Draw the extra seconds one step takes."""
        return self._draw(self.compute_mean)

    def message_delay(self) -> float:
        """Draw the latency of one message in seconds."""
        return self._draw(self.message_mean)

    def _draw(self, mean: float) -> float:
        if mean == 0.0:
            return 0.0
        return mean * float(self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter))


class LocalEuler:
    """Forward Euler ``c <- c + h f(c)`` on one vertex (arXiv:2603.14831).

    The one-step change is ``h * max|f|``, as in :mod:`sheafsim.integrators`.
    Stalks and forces are arrays of any array-API namespace.
    """

    def __init__(self, value: Any, step_size: float) -> None:
        self.xp = namespace(value)
        self.h = step_size

    def evaluation_point(self, value: Any) -> Any:
        """Return the point at which the next step evaluates forces."""
        return value

    def advance(self, value: Any, point: Any, force: Any) -> tuple[Any, float]:
        """Return the new stalk and this vertex's one-step change."""
        new = value + self.h * force
        return new, self.next_change(value, point, force)

    def next_change(self, value: Any, point: Any, force: Any) -> float:
        """Return the one-step change :meth:`advance` would make, without stepping."""
        xp = self.xp
        return self.h * float(xp.max(xp.abs(force)))

    def pin_previous(self, pins: list[ResolvedPin]) -> None:
        """Write hard pins into the kept previous stalk; Euler keeps none."""


class LocalNesterov:
    """Nesterov's method with adaptive restart on one vertex, one counter per column.

    The look-ahead point is ``y = c + mu (c - c_prev)`` with
    ``mu = (t - 1) / (t + 2)``. The counter ``t`` of a column restarts at 1 when
    ``<f(y), c_next - c> < 0``. The one-step change is the larger of
    ``max|c_next - c|`` and ``h * max|f(y)|``.
    """

    def __init__(self, value: Any, step_size: float) -> None:
        self.xp = namespace(value)
        self.h = step_size
        self.previous = value + 0.0
        self.counter = self.xp.ones_like(value[:1])

    def evaluation_point(self, value: Any) -> Any:
        """Return the look-ahead point ``c + mu (c - c_prev)``."""
        mu = (self.counter - 1.0) / (self.counter + 2.0)
        return value + mu * (value - self.previous)

    def advance(self, value: Any, point: Any, force: Any) -> tuple[Any, float]:
        """Return the new stalk and this vertex's one-step change."""
        xp, h = self.xp, self.h
        new = point + h * force
        change = new - value
        uphill = xp.sum(force * change, axis=0, keepdims=True) < 0
        self.counter = xp.where(uphill, 1.0, self.counter + 1.0)
        self.previous = value
        max_change = max(
            float(xp.max(xp.abs(change))), h * float(xp.max(xp.abs(force)))
        )
        return new, max_change

    def next_change(self, value: Any, point: Any, force: Any) -> float:
        """Return the one-step change :meth:`advance` would make, without stepping."""
        xp, h = self.xp, self.h
        change = point + h * force - value
        return max(float(xp.max(xp.abs(change))), h * float(xp.max(xp.abs(force))))

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
    integrator: str, value: Any, step_size: float
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
