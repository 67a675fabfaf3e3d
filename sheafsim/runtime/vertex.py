"""Vertex actor: one sheaf vertex that diffuses its own stalk.

The force on vertex ``v`` is computed from its own stalk and the latest
restricted values its neighbours sent (arXiv:2603.14831)::

    f_v = - sum_e pullback_e(y_v, apply_e(y_v) - m_e)
          - gamma * (y_v[coords] - target)          (soft pins)

with ``y_v`` the point where the integrator evaluates forces (the stalk itself
for Euler) and ``m_e`` the neighbour's message. Hard-pinned coordinates get zero
force. Messages are pushed with fire-and-forget actor calls, and nothing in the
step loop blocks on ``ray.get``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import numpy as np
import ray

from sheafsim.errors import RuntimeFailure
from sheafsim.runtime.local import Inbox, SyncSchedule, make_local
from sheafsim.runtime.spec import RunSettings, VertexSpec

__all__ = ["VertexActor"]

logger = logging.getLogger(__name__)


class VertexActor:
    """Async Ray actor of one vertex (wrap with ``ray.remote`` to use it).

    Parameters
    ----------
    spec : VertexSpec
        Stalk, maps of the incident edges and pins of this vertex.
    settings : RunSettings
        Step size, integrator, report interval and run-ahead window.

    Notes
    -----
    Protocol of the synchronous schedule: after step ``t`` (``t = 0`` is the
    initial state) the vertex sends ``apply_e(y_t)`` to the neighbour across
    every incident edge, tagged with ``t``. It takes step ``t + 1`` once it holds
    every neighbour's step-``t`` message and the coordinator's permit reaches
    ``t + 1``. Every ``report_every`` steps it sends the coordinator the
    one-step change of each step since the last report and its energy terms.
    When the coordinator sends the stopping step ``T``, :meth:`run` returns the
    stalk at step ``T`` from the bounded history of past stalks.

    The message methods (:meth:`receive`, :meth:`receive_static`,
    :meth:`permit`, :meth:`stop`) have ``num_returns=0``: callers send and
    forget, and Ray creates no return object.
    """

    def __init__(self, spec: VertexSpec, settings: RunSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.edges = [end.edge for end in spec.edges]
        self.inbox = Inbox(self.edges)
        self.schedule = SyncSchedule()
        self.step = 0
        self.permitted = min(settings.window, settings.max_steps)
        self.stop_step: int | None = None
        self._wake = asyncio.Event()

    async def ready(self) -> str:
        """Return the vertex name once the actor is constructed."""
        return self.spec.name

    @ray.method(num_returns=0)
    async def receive(self, edge: str, step: int, value: np.ndarray) -> None:
        """Store a neighbour's restricted value on ``edge`` for ``step``."""
        self.inbox.put(edge, step, value)
        self._wake.set()

    @ray.method(num_returns=0)
    async def receive_static(self, edge: str, from_step: int, value: Any) -> None:
        """Store a restricted value on ``edge`` valid from ``from_step`` on."""
        self.inbox.put_static(edge, from_step, value)
        self._wake.set()

    @ray.method(num_returns=0)
    async def permit(self, last_step: int) -> None:
        """Allow steps up to ``last_step``, unless a larger permit came first."""
        self.permitted = max(self.permitted, min(last_step, self.settings.max_steps))
        self._wake.set()

    @ray.method(num_returns=0)
    async def stop(self, step: int) -> None:
        """End the run at ``step``: :meth:`run` returns the stalk of that step."""
        self.stop_step = step
        self._wake.set()

    async def run(self, neighbours: dict[str, Any], coordinator: Any) -> np.ndarray:
        """Diffuse until the coordinator sends the stopping step.

        Parameters
        ----------
        neighbours : dict of str to ActorHandle
            Vertex actor of every neighbour, by vertex name.
        coordinator : ActorHandle
            The run's coordinator actor.

        Returns
        -------
        ndarray, shape (dim, batch)
            Stalk at the stopping step.
        """
        self.neighbours = neighbours
        self.coordinator = coordinator
        if self.spec.static:
            return await self._run_static()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return await self._run_stepping()

    async def _run_static(self) -> np.ndarray:
        spec = self.spec
        assert spec.static_from is not None and spec.static_value is not None
        if spec.static_from > 0:
            self._send(spec.static_from - 1, spec.value)
        for end in spec.edges:
            if end.neighbour_static:
                continue
            restricted = end.map.apply(spec.static_value)
            handle = self.neighbours[end.neighbour]
            handle.receive_static.remote(end.edge, spec.static_from, restricted)
        while self.stop_step is None:
            await self._sleep()
        if self.stop_step < spec.static_from:
            return spec.value
        return spec.static_value

    async def _run_stepping(self) -> np.ndarray:
        spec, settings = self.spec, self.settings
        integrator = make_local(settings.integrator, spec.value, settings.step_size)
        value = spec.value
        history: deque[tuple[int, np.ndarray]] = deque(maxlen=settings.window + 1)
        history.append((0, value))
        point = integrator.evaluation_point(value)
        self._send(0, point)
        changes: list[float] = []
        while True:
            while self.stop_step is None and not self._can_step():
                await self._sleep()
            if self.stop_step is not None:
                break
            messages = self.schedule.select(self.inbox, self.edges, self.step)
            report_due = self._report_due(self.step + 1)
            force, energy = self._force(point, messages, report_due)
            value, change = integrator.advance(value, point, force)
            self.step += 1
            if spec.pin_after_first_step and self.step == 1:
                change = max(change, self._write_hard_pins(value))
                integrator.pin_previous(spec.hard_pins)
            history.append((self.step, value))
            self._raise_injected_fault()
            point = integrator.evaluation_point(value)
            self._send(self.step, point)
            changes.append(change)
            if report_due:
                first = self.step - len(changes) + 1
                self.coordinator.report.remote(
                    spec.name, first, changes, self.step - 1, energy
                )
                changes = []
        return self._state_at(self.stop_step, history)

    def _can_step(self) -> bool:
        return self.step < self.permitted and self.schedule.ready(
            self.inbox, self.edges, self.step
        )

    async def _sleep(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    def _report_due(self, step: int) -> bool:
        every = self.settings.report_every
        return step % every == 0 or step == self.settings.max_steps

    def _send(self, step: int, point: np.ndarray) -> None:
        # Fire-and-forget: the ObjectRefs are dropped on purpose, so sending never
        # waits for the neighbour to run the call.
        for end in self.spec.edges:
            if end.neighbour_static:
                continue
            restricted = end.map.apply(point)
            self.neighbours[end.neighbour].receive.remote(end.edge, step, restricted)

    def _force(
        self, point: np.ndarray, messages: list[np.ndarray], with_energy: bool
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Return the heat force at ``point`` and, if asked, the energy terms.

        The force is accumulated edge by edge in the same order and with the
        same operations as :func:`sheafsim._kernels.neural_forces`, so both
        agree to the last bit.
        """
        spec = self.spec
        batch = point.shape[1]
        energy: dict[str, float] = {}
        force: np.ndarray | None = None
        for end, message in zip(spec.edges, messages, strict=True):
            residual = end.map.apply(point) - message
            pulled = end.map.pullback(point, residual)
            force = -pulled if force is None else force - pulled
            if with_energy and end.reports_energy:
                energy[end.edge] = float(np.sum(residual**2)) / batch
        if force is None:
            force = np.zeros_like(point)
        for pin in spec.soft_pins:
            gap = point[pin.index] - pin.value
            force[pin.index] -= pin.gamma * gap
            if with_energy:
                penalty = pin.gamma * float(np.sum(gap * gap)) / batch
                energy["soft_pins"] = energy.get("soft_pins", 0.0) + penalty
        for pin in spec.hard_pins:
            if pin.full:
                force = force * 0.0
            else:
                force[pin.index] = 0.0
        return force, energy

    def _write_hard_pins(self, value: np.ndarray) -> float:
        """Write the hard pins into ``value`` and return the largest gap closed."""
        gap = 0.0
        for pin in self.spec.hard_pins:
            gap = max(gap, float(np.max(np.abs(value[pin.index] - pin.value))))
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
        self, step: int | None, history: deque[tuple[int, np.ndarray]]
    ) -> np.ndarray:
        for past_step, past_value in history:
            if past_step == step:
                logger.debug(
                    "vertex %s stopped at step %s after taking %d steps",
                    self.spec.name,
                    step,
                    self.step,
                )
                return past_value
        raise RuntimeFailure(
            f"vertex {self.spec.name!r} received stop at step {step} but keeps "
            f"only steps {history[0][0]}..{history[-1][0]}; the run-ahead window "
            f"{self.settings.window} is too small"
        )
