"""Vertex actor: one sheaf vertex that diffuses its own stalk.

The force on vertex ``v`` is computed from its own stalk and the latest
restricted values its neighbours sent (arXiv:2603.14831)::

    f_v = - sum_e pullback_e(y_v, apply_e(y_v) - m_e)
          - gamma * (y_v[coords] - target)          (soft pins)

with ``y_v`` the point where the integrator evaluates forces (the stalk itself
for Euler) and ``m_e`` the neighbour's message. Hard-pinned coordinates get zero
force. Messages are pushed with fire-and-forget actor calls, and nothing in the
step loop blocks on ``ray.get``.

A stepping vertex keeps its stalk, maps and pins on the run's
:class:`~sheafsim.backend.ArrayBackend` (numpy, or torch on the CPU or a CUDA
device). Messages travel as host numpy arrays in the backend's precision. A
vertex converts each restricted value with ``to_numpy`` before it sends it,
and moves each received value to its backend with ``ArrayBackend.asarray``.
On the torch CPU backend that conversion shares the memory instead of copying
it. Final stalks, learned maps and reports leave the actor as host numpy
float64.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import warnings
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError

from sheafsim._backend import to_numpy
from sheafsim.backend import ArrayBackend
from sheafsim.errors import RuntimeFailure
from sheafsim.runtime.local import (
    AsyncSchedule,
    DelaySampler,
    Inbox,
    LocalEuler,
    LocalNesterov,
    make_local,
    make_schedule,
)
from sheafsim.runtime.maps import AffineMap
from sheafsim.runtime.spec import RunSettings, VertexSpec, spec_on_backend

__all__ = ["VertexActor", "VertexCounters", "EndDiagnostics"]

logger = logging.getLogger(__name__)

# Messages one edge may have in flight under the unbounded asynchronous
# schedule. More than one lets jittered latencies reorder messages. A vertex
# that steps faster than its neighbour runs the receive calls keeps only its
# newest value waiting, so the neighbour's backlog and the staleness of what it
# uses stay bounded.
MAX_IN_FLIGHT_PER_EDGE = 4


@dataclass
class VertexCounters:
    """Counters every vertex keeps over a run.

    Attributes
    ----------
    steps : int
        Steps taken.
    messages_sent : int
        ``receive`` and ``receive_static`` calls this vertex has made. A delayed
        message counts once its call is made, after its latency.
    messages_received : int
        ``receive`` and ``receive_static`` calls this vertex has run.
    max_staleness : int
        Max over steps and edges of the vertex's step minus the step tag of the
        message that step used, and at least 0. Always 0 under the synchronous
        schedule.
    """

    steps: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    max_staleness: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return asdict(self)


@dataclass
class EndDiagnostics:
    """Diagnostics a vertex returns from :meth:`VertexActor.end_diagnostics`.

    Attributes
    ----------
    staleness : dict of int to int
        Steps taken, by the staleness of the messages each step used (see
        :attr:`VertexCounters.max_staleness`).
    crossings : list of tuple of (int, int, int)
        Crossing rows ``(step, layer, count)`` that the vertex counted but has
        not reported. Always empty under the synchronous schedule, because
        there the unreported steps follow the stopping step.
    final_crossings : list of tuple of (int, int, int)
        At most one row for the last step ``T``: the stopping step
        (synchronous) or the vertex's own last step (asynchronous). It counts
        the mask entries of the stalk at step ``T`` that differ from the mask
        step ``T`` used, as the final check of :func:`sheafsim.dynamics.diffuse`
        does.
    """

    staleness: dict[int, int] = field(default_factory=dict)
    crossings: list[tuple[int, int, int]] = field(default_factory=list)
    final_crossings: list[tuple[int, int, int]] = field(default_factory=list)


class VertexActor:
    """Async Ray actor of one vertex (wrap with ``ray.remote`` to use it).

    Parameters
    ----------
    spec : VertexSpec
        Stalk, maps of the incident edges and pins of this vertex.
    settings : RunSettings
        Step size, integrator, schedule, report interval and run-ahead window.
    mask_layer : int, optional
        Layer ``l`` when this vertex is the pre-activation ``z_l`` of a ReLU
        layer, whose activation-edge map is ``diag(1[z_l >= 0])``. The vertex
        then counts the ReLU boundary crossings of that layer.

    Notes
    -----
    After step ``t`` (``t = 0`` is the initial state) the vertex sends
    ``apply_e(y_t)`` to the neighbour across every incident edge, tagged with
    ``t``. Every ``report_every`` steps and at step ``max_steps`` it sends the
    coordinator the one-step change of each step since its last report, its
    energy terms, its :class:`VertexCounters` and its staleness histogram.

    Crossings: the mask of ``z_l`` used by step ``t`` is ``1[y_{t-1} >= 0]``
    at the evaluation point ``y_{t-1}`` (the look-ahead point under
    Nesterov). When step ``t + 1`` starts, the vertex counts the entries in
    which its mask differs from the one step ``t`` used. That count is the
    crossing row of step ``t``, with the meaning of the ``crossings`` of
    :func:`sheafsim.dynamics.diffuse`, and it travels with the next report.
    The row of the last step comes from :meth:`end_diagnostics`.

    Synchronous schedule: the vertex takes step ``t + 1`` once it holds every
    neighbour's step-``t`` message and the coordinator's permit reaches
    ``t + 1``. When the coordinator sends the stopping step ``T``, :meth:`run`
    returns the stalk at step ``T`` from the bounded history of past stalks.

    Asynchronous schedule: the vertex steps whenever the schedule accepts the
    messages it has received, up to ``max_steps``, without permits. It yields
    to the event loop after every step, so incoming messages are stored
    between steps. Without a staleness bound, once its last
    ``convergence_window`` one-step changes are all below ``tol``, it steps
    again only on a message it has not used yet, so it reports its changes so
    far and waits. The coordinator confirms
    convergence with a quiescence round: :meth:`pause` stops the stepping, and
    the vertex replies with its counters and the one-step change it would make
    on the latest messages it has received. :meth:`poll` requests the reply
    again and :meth:`resume` lets the vertex step on. On :meth:`stop`,
    :meth:`run` returns the current stalk.

    The message methods (:meth:`receive`, :meth:`receive_static`,
    :meth:`permit`, :meth:`stop`, :meth:`pause`, :meth:`poll`, :meth:`resume`)
    have ``num_returns=0``: callers send and forget, and Ray creates no return
    object. The exception is the unbounded asynchronous schedule, where each
    edge awaits its ``receive`` calls to keep at most
    ``MAX_IN_FLIGHT_PER_EDGE`` messages in flight. A newer message then
    replaces one waiting to be sent.
    """

    def __init__(
        self, spec: VertexSpec, settings: RunSettings, mask_layer: int | None = None
    ) -> None:
        backend = settings.backend
        if spec.static:
            # A static vertex only sends its restricted values once, so it
            # needs no device.
            backend = ArrayBackend("numpy", "cpu", backend.dtype)
        if backend.name == "torch":
            # Received messages can be read-only numpy arrays. The vertex
            # never writes into them, so sharing their memory is safe, and
            # this process runs only this actor.
            warnings.filterwarnings(
                "ignore",
                message="The given NumPy array is not writable",
                category=UserWarning,
            )
        self.backend = backend
        self.xp = backend.xp
        spec = spec_on_backend(spec, backend)
        self.spec = spec
        self.settings = settings
        self.mask_layer = mask_layer
        self.edges = [end.edge for end in spec.edges]
        self.inbox = Inbox(self.edges)
        self.schedule = make_schedule(settings.schedule, settings.staleness_bound)
        self.asynchronous = settings.schedule == "async"
        # With a staleness bound an idle vertex could block a neighbour that
        # waits for its next message, and the bound already keeps vertices
        # within B + 1 steps of each other.
        self.may_idle = self.asynchronous and settings.staleness_bound is None

        self.step = 0
        if self.asynchronous:
            self.permitted = settings.max_steps
        else:
            self.permitted = min(settings.window, settings.max_steps)
        self.stopped = False
        self.stop_step: int | None = None
        self.paused_round: int | None = None
        self.reply_round: int | None = None

        self.counters = VertexCounters()
        self.staleness_counts: Counter[int] = Counter()
        self.delays: DelaySampler | None = None
        if settings.delays is not None and spec.delay_seed is not None:
            self.delays = DelaySampler(settings.delays, spec.name, spec.delay_seed)

        self._learners = [
            (end.edge, end.map)
            for end in spec.edges
            if end.trains and isinstance(end.map, AffineMap)
        ]
        self._learn_rate = settings.weight_rate
        self._residuals: dict[str, Any] = {}
        self._unreported: list[float] = []
        self._energy: dict[str, float] = {}
        self._recent: deque[float] = deque(maxlen=settings.convergence_window)
        self._used_tags: list[int | None] | None = None
        self._idle_reported = False
        # Mask of z_l that the latest step used, and crossing rows
        # (step, layer, count) not yet reported.
        self._mask_used: Any = None
        self._unreported_crossings: list[tuple[int, int, int]] = []
        self._end = EndDiagnostics()

        self._deliveries: set[asyncio.Task] = set()
        self._channels: dict[str, _LatestValueChannel] = {}
        if self.may_idle:
            self._channels = {
                end.edge: _LatestValueChannel(self, MAX_IN_FLIGHT_PER_EDGE)
                for end in spec.edges
            }
        self._wake = asyncio.Event()

    async def ready(self) -> str:
        """Return the vertex name once the actor is constructed."""
        return self.spec.name

    async def learned_maps(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return ``(W, b)`` of every affine map this vertex learns, by edge name."""
        return self._learned()

    def _learned(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            edge: (_to_host(m.weight), _to_host(m.bias)) for edge, m in self._learners
        }

    async def stats(self) -> dict[str, int]:
        """Return the vertex's counters (see :class:`VertexCounters`)."""
        return self.counters.as_dict()

    async def end_diagnostics(self) -> EndDiagnostics:
        """Return the staleness histogram and the crossings not yet reported.

        Call it after :meth:`run` has returned, because until then the crossing
        rows are empty.
        """
        self._end.staleness = dict(self.staleness_counts)
        return self._end

    @ray.method(num_returns=0)
    async def receive(self, edge: str, step: int, value: np.ndarray) -> None:
        """Store a neighbour's restricted value on ``edge`` for ``step``."""
        self.inbox.put(edge, step, self.backend.asarray(value))
        self.counters.messages_received += 1
        self._wake.set()

    @ray.method(num_returns=0)
    async def receive_static(self, edge: str, from_step: int, value: Any) -> None:
        """Store a restricted value on ``edge`` valid from ``from_step`` on."""
        self.inbox.put_static(edge, from_step, self.backend.asarray(value))
        self.counters.messages_received += 1
        self._wake.set()

    @ray.method(num_returns=0)
    async def permit(self, last_step: int) -> None:
        """Allow steps up to ``last_step``, unless a larger permit came first."""
        self.permitted = max(self.permitted, min(last_step, self.settings.max_steps))
        self._wake.set()

    @ray.method(num_returns=0)
    async def stop(self, step: int | None) -> None:
        """End the run: :meth:`run` returns the stalk of ``step``.

        ``step`` is None under the asynchronous schedule, where :meth:`run`
        returns the current stalk.
        """
        self.stopped = True
        self.stop_step = step
        self._wake.set()

    @ray.method(num_returns=0)
    async def pause(self, round_id: int) -> None:
        """Stop stepping and reply to quiescence round ``round_id``."""
        self.paused_round = round_id
        self.reply_round = round_id
        self._wake.set()

    @ray.method(num_returns=0)
    async def poll(self, round_id: int) -> None:
        """Reply to quiescence round ``round_id`` again, if it is still paused."""
        if self.paused_round == round_id:
            self.reply_round = round_id
            self._wake.set()

    @ray.method(num_returns=0)
    async def resume(self, round_id: int) -> None:
        """Step on after quiescence round ``round_id``."""
        if self.paused_round == round_id:
            self.paused_round = None
            self.reply_round = None
            # The coordinator needs convergence_window fresh changes before its
            # next round, so an idle vertex steps again.
            self._recent.clear()
            self._wake.set()

    async def run(self, neighbours: dict[str, Any], coordinator: Any) -> np.ndarray:
        """Diffuse until the coordinator ends the run.

        Parameters
        ----------
        neighbours : dict of str to ActorHandle
            Vertex actor of every neighbour, by vertex name.
        coordinator : ActorHandle
            The run's coordinator actor.

        Returns
        -------
        ndarray of float64, shape (dim, batch)
            Stalk at the stopping step (synchronous schedule) or when the stop
            arrived (asynchronous schedule), on the host.
        """
        self.neighbours = neighbours
        self.coordinator = coordinator
        try:
            if self.spec.static:
                return _to_host(await self._run_static())
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return _to_host(await self._run_stepping())
        finally:
            # Messages still waiting out their latency are dropped, and they
            # were never counted as sent.
            for task in list(self._deliveries):
                task.cancel()

    async def _run_static(self) -> Any:
        spec = self.spec
        assert spec.static_from is not None and spec.static_value is not None
        if spec.static_from > 0:
            self._send(spec.static_from - 1, self._restrict(spec.value))
        for end in spec.edges:
            if end.neighbour_static:
                continue
            restricted = to_numpy(end.map.apply(spec.static_value))
            handle = self.neighbours[end.neighbour]
            self._deliver(
                handle.receive_static, (end.edge, spec.static_from, restricted)
            )
        while not self.stopped:
            if self.reply_round is not None:
                await self._send_quiescence_reply(lambda: 0.0)
                continue
            await self._sleep()
        if self.stop_step is not None and self.stop_step < spec.static_from:
            return spec.value
        return spec.static_value

    async def _run_stepping(self) -> Any:
        spec, settings = self.spec, self.settings
        integrator = make_local(settings.integrator, spec.value, settings.step_size)
        value = spec.value
        # (step t, stalk at t, mask that step t used or None)
        history: deque[tuple[int, Any, Any]] = deque(maxlen=settings.window + 1)
        history.append((0, value, None))
        point = integrator.evaluation_point(value)
        restricted = self._restrict(point)
        self._send(0, restricted)
        while True:
            while not self.stopped and (
                self.paused_round is not None or not self._can_step()
            ):
                if self.reply_round is not None:
                    await self._send_quiescence_reply(
                        functools.partial(
                            self._next_change, integrator, value, point, restricted
                        )
                    )
                    continue
                if not self._idle_reported and self._idle():
                    # No step may follow for a while, so the coordinator gets
                    # the changes that made this vertex idle.
                    self._report(idle=True)
                    self._idle_reported = True
                await self._sleep()
            if self.stopped:
                break
            selection = self.schedule.select(self.inbox, self.edges, self.step)
            report_due = self._report_due(self.step + 1)
            with_energy = report_due or self.asynchronous
            force, energy = self._force(
                point, restricted, selection.values, with_energy
            )
            mask = self._count_crossings(point)
            for edge, learner in self._learners:
                # The weight step uses the same old state as the stalk step.
                learner.learn(point, self._residuals[edge], self._learn_rate)
            value, change = integrator.advance(value, point, force)
            self.step += 1
            self.counters.steps = self.step
            self.counters.max_staleness = max(
                self.counters.max_staleness, selection.staleness
            )
            self.staleness_counts[selection.staleness] += 1
            if spec.pin_after_first_step and self.step == 1:
                change = max(change, self._write_hard_pins(value))
                integrator.pin_previous(spec.hard_pins)
            if not self.asynchronous:
                history.append((self.step, value, mask))
            self._raise_injected_fault()
            point = integrator.evaluation_point(value)
            restricted = self._restrict(point)
            compute_s = self.delays.compute_delay() if self.delays else 0.0
            if compute_s > 0.0:
                await asyncio.sleep(compute_s)
            self._send(self.step, restricted)
            self._unreported.append(change)
            self._energy = energy
            self._recent.append(change)
            self._used_tags = selection.tags
            self._idle_reported = False
            if report_due:
                self._report()
            if self.asynchronous and compute_s == 0.0:
                # Nothing else awaits between two asynchronous steps; yield so
                # that queued messages, pauses and stops run.
                await asyncio.sleep(0)
        if self.asynchronous:
            logger.debug("vertex %s stopped after %d steps", spec.name, self.step)
            self._end.crossings = self._unreported_crossings
            self._end.final_crossings = self._final_crossings(
                self.step, value, self._mask_used
            )
            return value
        # Unreported rows belong to steps after the stopping step.
        self._unreported_crossings = []
        step, value, mask = self._state_at(self.stop_step, history)
        self._end.final_crossings = self._final_crossings(step, value, mask)
        return value

    def _count_crossings(self, point: Any) -> Any:
        """Return the mask that the coming step uses at ``point``.

        Also stores the crossing row of the step just taken (``self.step``):
        the mask entries that differ from the mask that step used.
        """
        if self.mask_layer is None:
            return None
        mask = point >= 0
        if self._mask_used is not None:
            changed = int(self.xp.count_nonzero(mask != self._mask_used))
            if changed:
                self._unreported_crossings.append((self.step, self.mask_layer, changed))
        self._mask_used = mask
        return mask

    def _final_crossings(
        self, step: int, value: Any, used: Any
    ) -> list[tuple[int, int, int]]:
        """Return the crossing row of the last step ``step``, if it has one.

        ``used`` is the mask step ``step`` used. Like the final check of
        :func:`sheafsim.dynamics.diffuse`, this compares it with the mask of
        the stalk ``value`` itself, not of the next look-ahead point.
        """
        if self.mask_layer is None or used is None:
            return []
        changed = int(self.xp.count_nonzero((value >= 0) != used))
        return [(step, self.mask_layer, changed)] if changed else []

    def _report(self, idle: bool = False) -> None:
        """Send the coordinator the changes since the last report.

        ``idle`` marks the report of a vertex that now waits for a new message.
        """
        changes = self._unreported
        epoch_steps = self.settings.epoch_steps
        params = None
        if self._learners and epoch_steps and self.step % epoch_steps == 0:
            params = self._learned()
        self.coordinator.report.remote(
            self.spec.name,
            self.step - len(changes) + 1,
            changes,
            self.step - 1,
            self._energy,
            self.counters.as_dict(),
            idle,
            params,
            self._unreported_crossings,
            dict(self.staleness_counts),
        )
        self._unreported = []
        self._unreported_crossings = []

    def _can_step(self) -> bool:
        if self.step >= self.permitted:
            return False
        if not self.asynchronous:
            return self.schedule.ready(self.inbox, self.edges, self.step)
        assert isinstance(self.schedule, AsyncSchedule)
        tags = self.schedule.tags(self.inbox, self.edges, self.step)
        return tags is not None and not (self._relaxed() and tags == self._used_tags)

    def _relaxed(self) -> bool:
        """Return whether the last ``convergence_window`` changes were below tol."""
        recent = self._recent
        return (
            self.may_idle
            and len(recent) == recent.maxlen
            and max(recent) < self.settings.tol
        )

    def _idle(self) -> bool:
        """Return whether the vertex waits only because it relaxed on old messages."""
        if not self._relaxed() or self.step >= self.permitted:
            return False
        assert isinstance(self.schedule, AsyncSchedule)
        tags = self.schedule.tags(self.inbox, self.edges, self.step)
        return tags is not None and tags == self._used_tags

    async def _sleep(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    def _report_due(self, step: int) -> bool:
        every = self.settings.report_every
        return step % every == 0 or step == self.settings.max_steps

    def _restrict(self, point: Any) -> list[Any]:
        """Return ``apply_e(point)`` of every incident edge, in edge order.

        A step sends these values and the next step's force uses them again, so
        each map is applied once per point.
        """
        return [end.map.apply(point) for end in self.spec.edges]

    def _send(self, step: int, restricted: list[Any]) -> None:
        """Send ``restricted[i]`` across edge ``i`` to every stepping neighbour.

        Each value leaves as a host numpy array, in the backend's precision.
        """
        for end, value in zip(self.spec.edges, restricted, strict=True):
            if end.neighbour_static:
                continue
            handle = self.neighbours[end.neighbour]
            args = (end.edge, step, to_numpy(value))
            channel = self._channels.get(end.edge)
            if channel is None:
                self._deliver(handle.receive, args)
            else:
                channel.offer(handle.receive, args)

    def _deliver(self, method: Any, args: tuple) -> None:
        """Call ``method.remote(*args)`` now, or after a drawn message latency.

        The call is fire-and-forget: its ObjectRef is dropped, so sending never
        waits for the neighbour to run it.
        """
        latency = self.delays.message_delay() if self.delays else 0.0
        if latency == 0.0:
            method.remote(*args)
            self.counters.messages_sent += 1
            return
        self._start_task(self._deliver_later(latency, method, args))

    async def _deliver_later(self, latency: float, method: Any, args: tuple) -> None:
        await asyncio.sleep(latency)
        method.remote(*args)
        self.counters.messages_sent += 1

    def _start_task(self, coroutine: Any) -> None:
        """Run ``coroutine`` as a delivery task that a quiescence round waits for."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _send_quiescence_reply(self, next_change: Callable[[], float]) -> None:
        """Send the coordinator this vertex's reply to the pending round.

        Delayed messages go out first, so the counters include every message
        of the steps already taken. ``next_change()`` is evaluated together
        with the counters, on the messages counted as received.
        """
        round_id = self.reply_round
        self.reply_round = None
        # A finishing channel task starts the delivery of the message waiting
        # behind it, so wait until no task is left.
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries))
        self.coordinator.quiescence_report.remote(
            round_id, self.spec.name, self.counters.as_dict(), next_change()
        )

    def _next_change(
        self,
        integrator: LocalEuler | LocalNesterov,
        value: Any,
        point: Any,
        restricted: list[Any],
    ) -> float:
        """Return the one-step change on the latest messages, or inf if one is missing.

        The staleness bound does not apply, because the coordinator uses this
        value only from a poll in which every sent message had arrived.
        """
        messages = []
        for edge in self.edges:
            latest = self.inbox.latest(edge, self.step)
            if latest is None:
                return math.inf
            messages.append(latest[1])
        force, _ = self._force(point, restricted, messages, False)
        return integrator.next_change(value, point, force)

    def _force(
        self,
        point: Any,
        restricted: list[Any],
        messages: list[Any],
        with_energy: bool,
    ) -> tuple[Any, dict[str, float]]:
        """Return the heat force at ``point`` and, if asked, the energy terms.

        ``restricted`` is :meth:`_restrict` of ``point``. The force is
        accumulated edge by edge in the same order and with the same operations
        as :func:`sheafsim._kernels.neural_forces`, so both agree to the last
        bit.
        """
        spec, xp = self.spec, self.xp
        batch = point.shape[1]
        energy: dict[str, float] = {}
        force: Any = None
        for end, applied, message in zip(spec.edges, restricted, messages, strict=True):
            residual = applied - message
            if end.trains:
                self._residuals[end.edge] = residual
            pulled = end.map.pullback_applied(point, applied, residual)
            force = -pulled if force is None else force - pulled
            if with_energy and end.reports_energy:
                energy[end.edge] = float(xp.sum(residual**2)) / batch
        if force is None:
            force = xp.zeros_like(point)
        for pin in spec.soft_pins:
            gap = point[pin.index] - pin.value
            force[pin.index] -= pin.gamma * gap
            if with_energy:
                penalty = pin.gamma * float(xp.sum(gap * gap)) / batch
                energy["soft_pins"] = energy.get("soft_pins", 0.0) + penalty
        for pin in spec.hard_pins:
            if pin.full:
                force = force * 0.0
            else:
                force[pin.index] = 0.0
        return force, energy

    def _write_hard_pins(self, value: Any) -> float:
        """Write the hard pins into ``value`` and return the largest gap closed."""
        xp = self.xp
        gap = 0.0
        for pin in self.spec.hard_pins:
            gap = max(gap, float(xp.max(xp.abs(value[pin.index] - pin.value))))
        for pin in self.spec.hard_pins:
            value[pin.index] = pin.value
        return gap

    def _raise_injected_fault(self) -> None:
        fault = self.settings.inject_fault
        if fault is not None and fault == (self.spec.name, self.step):
            raise RuntimeFailure(
                f"injected fault in vertex {self.spec.name!r} at step {self.step}"
            )

    def _state_at(
        self,
        step: int | None,
        history: deque[tuple[int, Any, Any]],
    ) -> tuple[int, Any, Any]:
        """Return the entry of ``history`` for ``step``: step, stalk and mask used."""
        for entry in history:
            if entry[0] == step:
                logger.debug(
                    "vertex %s stopped at step %s after taking %d steps",
                    self.spec.name,
                    step,
                    self.step,
                )
                return entry
        raise RuntimeFailure(
            f"vertex {self.spec.name!r} received stop at step {step} but keeps "
            f"only steps {history[0][0]}..{history[-1][0]}; the run-ahead window "
            f"{self.settings.window} is too small"
        )


def _to_host(array: Any) -> np.ndarray:
    """Return ``array`` as host numpy float64, without a copy when it already is."""
    return np.asarray(to_numpy(array), dtype=np.float64)


class _LatestValueChannel:
    """Sender of one edge that keeps a bounded number of messages in flight.

    A message is in flight from :meth:`offer` until the neighbour has run its
    ``receive`` call, latency included. While ``limit`` messages are in flight,
    an offered message waits, and a newer one replaces it without being sent.
    The neighbour uses only the latest message it has, so a replaced message
    would never have been used once the newer one arrived.
    """

    def __init__(self, vertex: VertexActor, limit: int) -> None:
        self.vertex = vertex
        self.limit = limit
        self.in_flight = 0
        self.waiting: tuple[Any, tuple] | None = None

    def offer(self, method: Any, args: tuple) -> None:
        """Send ``method.remote(*args)`` now or once a message in flight arrives."""
        if self.in_flight < self.limit:
            self._start(method, args)
        else:
            self.waiting = (method, args)

    def _start(self, method: Any, args: tuple) -> None:
        self.in_flight += 1
        self.vertex._start_task(self._deliver(method, args))

    async def _deliver(self, method: Any, args: tuple) -> None:
        vertex = self.vertex
        latency = vertex.delays.message_delay() if vertex.delays else 0.0
        if latency > 0.0:
            await asyncio.sleep(latency)
        reply = method.options(num_returns=1).remote(*args)
        vertex.counters.messages_sent += 1
        try:
            await reply
        except RayError as error:
            # The neighbour failed. The driver detects that and ends the run.
            logger.debug("vertex %s: a message was lost: %s", vertex.spec.name, error)
        finally:
            self.in_flight -= 1
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            self._start(*waiting)
