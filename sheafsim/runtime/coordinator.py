"""Coordinator actor: applies the stopping rule to the vertex reports.

Every stepping vertex reports the one-step change of each of its steps, in
chunks of ``report_every`` steps. Once every vertex has reported step ``t``, the
coordinator takes the max over vertices and applies the rule of
:func:`sheafsim.dynamics.diffuse` to it, in order:

1. ``non_finite`` if the change is NaN or infinite;
2. ``diverged`` if it exceeds ``DIVERGENCE_FACTOR * max(first change, 1)``;
3. ``converged`` if ``t >= min_steps`` and it is below ``tol``;
4. ``max_steps`` if ``t == max_steps``.

At the first step ``T`` that ends the run it sends ``stop(T)`` to every vertex.
While the run goes on it grants each vertex permission to run up to
``window`` steps past the last checked step, so that every vertex still keeps
its stalk of step ``T`` when the stop arrives.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from sheafsim.dynamics import DIVERGENCE_FACTOR

__all__ = ["CoordinatorActor", "StoppingRule", "RunEnd"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoppingRule:
    """Parameters of the stopping rule, as in :func:`sheafsim.dynamics.diffuse`.

    Attributes
    ----------
    tol : float
        Converged once the max one-step change is below ``tol``.
    min_steps, max_steps : int
    alpha, dt : float
        Only quoted in the divergence message.
    window : int
        Steps a vertex may run past the last checked step.
    static_changes : dict of int to float
        One-step change contributed by static vertices at a step.
    static_energy : float
        Energy of edges between two static vertices.
    """

    tol: float
    min_steps: int
    max_steps: int
    alpha: float
    dt: float
    window: int
    static_changes: dict[int, float] = field(default_factory=dict)
    static_energy: float = 0.0


@dataclass
class RunEnd:
    """Outcome of a run, as returned by :meth:`CoordinatorActor.wait_end`.

    Attributes
    ----------
    status : str
        ``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"non_finite"``.
    steps : int
        Stopping step ``T``.
    max_update : float
        Max one-step change over all vertices at step ``T``.
    message : str
    max_change_history : list of float
        Max one-step change over all vertices of steps ``1..T``.
    energy_steps, energy : list
        Sheaf energy ``1/2 (sum of edge discords + soft-pin penalties)`` at the
        points where steps ``energy_steps[i] + 1`` evaluated their forces.
    elapsed_s : float
        Seconds from :meth:`CoordinatorActor.start` to the end.
    """

    status: str
    steps: int
    max_update: float
    message: str
    max_change_history: list[float]
    energy_steps: list[int]
    energy: list[float]
    elapsed_s: float


@dataclass
class _StepTally:
    reports: int = 0
    max_change: float = 0.0
    non_finite: float | None = None


@dataclass
class _EnergyTally:
    reports: int = 0
    total: float = 0.0


class CoordinatorActor:
    """Async Ray actor that decides when a run ends (wrap with ``ray.remote``).

    Parameters
    ----------
    vertices : dict of str to ActorHandle
        Every vertex actor of the run, static ones included.
    stepping : list of str
        Names of the vertices that take steps and report.
    rule : StoppingRule
    """

    def __init__(
        self, vertices: dict[str, Any], stepping: list[str], rule: StoppingRule
    ) -> None:
        self.vertices = vertices
        self.stepping = list(stepping)
        self.rule = rule
        self.checked = 0
        self.first_change: float | None = None
        self.history: list[float] = []
        self.energy_steps: list[int] = []
        self.energy: list[float] = []
        self.steps: dict[int, _StepTally] = {}
        self.energy_tallies: dict[int, _EnergyTally] = {}
        self.end: RunEnd | None = None
        self.start_time = time.perf_counter()
        self._ended = asyncio.Event()

    async def start(self) -> None:
        """Start the clock, and end the run at once if no vertex takes steps."""
        self.start_time = time.perf_counter()
        if not self.stepping:
            self._check_complete_steps()

    @ray.method(num_returns=0)
    async def report(
        self,
        vertex: str,
        first_step: int,
        changes: list[float],
        energy_step: int,
        energy_terms: dict[str, float],
    ) -> None:
        """Record a vertex's one-step changes of steps ``first_step, ...``.

        Parameters
        ----------
        vertex : str
        first_step : int
            Step of ``changes[0]``.
        changes : list of float
            The vertex's max absolute one-step change of each step.
        energy_step : int
            Step whose evaluation point the energy terms belong to.
        energy_terms : dict of str to float
            Discord of the edges this vertex reports and its soft-pin penalty.
        """
        if self.end is not None:
            return
        for offset, change in enumerate(changes):
            tally = self.steps.setdefault(first_step + offset, _StepTally())
            tally.reports += 1
            if math.isfinite(change):
                tally.max_change = max(tally.max_change, change)
            elif tally.non_finite is None or math.isnan(change):
                # NaN wins over infinity, as it does in numpy's max.
                tally.non_finite = change
        energy = self.energy_tallies.setdefault(energy_step, _EnergyTally())
        energy.reports += 1
        energy.total += sum(energy_terms.values())
        if energy.reports == len(self.stepping):
            self.energy_steps.append(energy_step)
            self.energy.append(0.5 * (energy.total + self.rule.static_energy))
            del self.energy_tallies[energy_step]
        before = self.checked
        self._check_complete_steps()
        if self.end is None and self.checked > before:
            limit = min(self.checked + self.rule.window, self.rule.max_steps)
            for name in self.stepping:
                self.vertices[name].permit.remote(limit)

    async def wait_end(self) -> RunEnd:
        """Wait until the stopping rule ends the run and return how it ended."""
        await self._ended.wait()
        assert self.end is not None
        return self.end

    async def progress(self) -> tuple[int, float, float]:
        """Return the last checked step, its max one-step change and the seconds run."""
        change = self.history[-1] if self.history else math.nan
        return self.checked, change, time.perf_counter() - self.start_time

    def _check_complete_steps(self) -> None:
        needed = len(self.stepping)
        while self.end is None:
            step = self.checked + 1
            tally = self.steps.get(step)
            if tally is None and needed > 0:
                return
            if tally is None:
                tally = _StepTally()
            if tally.reports < needed:
                return
            self.steps.pop(step, None)
            self.checked = step
            change = max(tally.max_change, self.rule.static_changes.get(step, 0.0))
            if tally.non_finite is not None:
                change = tally.non_finite
            self.history.append(change)
            self._apply_rule(step, change)

    def _apply_rule(self, step: int, change: float) -> None:
        rule = self.rule
        if not math.isfinite(change):
            self._finish(
                "non_finite",
                step,
                change,
                f"a stalk became NaN or infinite at step {step}",
            )
            return
        if self.first_change is None:
            self.first_change = max(change, 1.0)
        if change > DIVERGENCE_FACTOR * self.first_change:
            message = (
                f"the one-step change grew to {change:.3g} at step {step}; "
                f"lower dt (now {rule.dt}) or alpha (now {rule.alpha})"
            )
            self._finish("diverged", step, change, message)
        elif step >= rule.min_steps and change < rule.tol:
            self._finish(
                "converged", step, change, f"max one-step change {change:.3g} < tol"
            )
        elif step >= rule.max_steps:
            self._finish(
                "max_steps", step, change, f"reached max_steps={rule.max_steps}"
            )

    def _finish(self, status: str, step: int, change: float, message: str) -> None:
        elapsed = time.perf_counter() - self.start_time
        self.end = RunEnd(
            status=status,
            steps=step,
            max_update=change,
            message=message,
            max_change_history=self.history,
            energy_steps=self.energy_steps,
            energy=self.energy,
            elapsed_s=elapsed,
        )
        for handle in self.vertices.values():
            handle.stop.remote(step)
        logger.debug("run ended: %s at step %d after %.3f s", status, step, elapsed)
        self._ended.set()
