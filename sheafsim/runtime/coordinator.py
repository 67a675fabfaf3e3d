"""Coordinator actor: applies the stopping rule to the vertex reports.

Every stepping vertex reports the one-step change of each of its steps, in
chunks of ``report_every`` steps, with its energy terms and counters. The
coordinator keeps every report as a :class:`ReportRow`.

Synchronous schedule: once every vertex has reported step ``t``, the
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

Asynchronous schedule: vertices have no common step, so the rule is applied
to each report as it arrives:

1. ``non_finite`` if any reported change is NaN or infinite;
2. ``diverged`` if any exceeds ``DIVERGENCE_FACTOR * max(step-1 changes, 1)``;
3. ``converged`` after a quiescence round. A round starts when every stepping
   vertex has taken at least ``min_steps`` steps and reported changes below
   ``tol`` for its last ``convergence_window`` steps. Every vertex then pauses
   and replies with its counters and the one-step change it would make on the
   latest messages it has received. The coordinator polls again until the
   replies show as many messages received as sent, so no message is in flight and
   every vertex has its neighbours' current values. If every one-step change
   is then below ``tol``, the run has converged. Otherwise the vertices resume,
   and a new round needs ``convergence_window`` fresh changes per vertex and
   waits ``ROUND_BACKOFF`` times as long as the failed round took, so the
   vertices spend at most a quarter of the run paused.
4. ``max_steps`` once some vertex has reported step ``max_steps`` and every
   other one has too or is idle. An idle vertex (unbounded schedule only) has
   relaxed on the messages it has and waits for a new one.

The run ends with ``stop(None)``, and every vertex returns its current stalk.

Given :class:`~sheafsim.runtime.metrics.RecordSettings`, the coordinator also
streams the run's Parquet tables (see :mod:`sheafsim.runtime.metrics`). A row
of ``convergence.parquet`` and the matching edge rows are written for step
``t`` once the energy terms that every stepping vertex sent with its report of
step ``t`` are in: synchronous runs at every step ``t`` that is a multiple of
``report_every`` (and at ``max_steps``) up to the stopping step; asynchronous
runs once per round in which every stepping vertex reported, with ``t`` one more
than the smallest energy step of the round.

Each pre-activation vertex ``z_l`` sends with its reports the ReLU boundary
crossings of layer ``l`` as rows ``(step, layer, count)``, and every vertex
sends its staleness histogram. Synchronous runs keep the crossing row of step
``t`` until step ``t + 1`` is checked, so no row follows the stopping step
``T``. The row of step ``T`` itself arrives at the end through
:meth:`CoordinatorActor.close_crossings`, and it is kept only for the statuses
``converged`` and ``max_steps``, as in :func:`sheafsim.dynamics.diffuse`.
Asynchronous runs keep every row as it arrives, with the vertex's own step
count as its step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

from sheafsim.dynamics import DIVERGENCE_FACTOR
from sheafsim.runtime.metrics import (
    MetricsSink,
    RecordSettings,
    TrainingMonitor,
    pin_edge,
)

__all__ = ["CoordinatorActor", "StoppingRule", "RunEnd", "ReportRow"]

logger = logging.getLogger(__name__)

# The poll interval of a quiescence round doubles from 1 ms up to this cap while
# messages are still in flight.
MAX_POLL_INTERVAL_S = 0.05

# After a failed quiescence round of d seconds, the next one starts no earlier
# than ROUND_BACKOFF * d seconds later.
ROUND_BACKOFF = 3.0


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
        Steps a vertex may run past the last checked step (synchronous
        schedule only).
    static_changes : dict of int to float
        One-step change contributed by static vertices at a step.
    static_energy : float
        Energy of edges between two static vertices.
    schedule : {"sync", "async"}
    convergence_window : int
        Asynchronous schedule: steps of every vertex whose changes must all be
        below ``tol`` before a quiescence round starts.
    static_crossings : tuple of tuple of (int, int, int)
        Crossing rows ``(step, layer, count)`` of static pre-activation
        vertices. A fully pinned ``z_l`` of a run that starts unpinned changes
        its mask once, between steps 1 and 2.
    """

    tol: float
    min_steps: int
    max_steps: int
    alpha: float
    dt: float
    window: int
    static_changes: dict[int, float] = field(default_factory=dict)
    static_energy: float = 0.0
    schedule: str = "sync"
    convergence_window: int = 10
    static_crossings: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class ReportRow:
    """One vertex report, as kept by the coordinator.

    Attributes
    ----------
    time_s : float
        Seconds from :meth:`CoordinatorActor.start` to the report's arrival.
    vertex : str
    step : int
        Steps the vertex had taken when it reported.
    max_update : float
        Max one-step change of the vertex over the steps since its previous
        report (NaN or infinite if any of them was).
    energy_step : int
        Step whose evaluation point the energy terms belong to: the terms were
        computed by step ``energy_step + 1``, on the messages that step used.
    energy : dict of str to float
        Discord ``|residual|^2 / batch`` of each edge the vertex reports, by
        edge name, and under ``"pin:<vertex>"`` its soft-pin penalty, if it
        has any.
    counters : dict of str to int
        The vertex's counters: ``steps``, ``messages_sent``,
        ``messages_received`` and ``max_staleness``.
    idle : bool
        Whether the vertex then waited for a new message because its last
        ``convergence_window`` changes were below ``tol`` (asynchronous
        schedule without a staleness bound).
    """

    time_s: float
    vertex: str
    step: int
    max_update: float
    energy_step: int
    energy: dict[str, float]
    counters: dict[str, int]
    idle: bool = False


@dataclass
class RunEnd:
    """Outcome of a run, as returned by :meth:`CoordinatorActor.wait_end`.

    Attributes
    ----------
    status : str
        ``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"non_finite"``.
    steps : int
        Stopping step ``T`` (synchronous), or the max step over the vertices'
        last reports (asynchronous).
    max_update : float
        Max one-step change over all vertices at step ``T`` (synchronous). For
        an asynchronous run: at the quiescent state if it converged, else the
        change that ended the run or the max of the vertices' last changes.
    message : str
    max_change_history : list of float
        Entry ``t - 1`` is the max one-step change of step ``t`` over all
        vertices. Asynchronous: over the vertices that reported step ``t``,
        which took it at different times.
    energy_steps, energy : list
        Sheaf energy ``1/2 (sum of edge discords + soft-pin penalties)``.
        Synchronous: at the points where steps ``energy_steps[i] + 1`` evaluated
        their forces. Asynchronous: one entry per round in which every
        stepping vertex reported, from each vertex's latest terms, with
        ``energy_steps[i]`` the smallest of their energy steps.
    elapsed_s : float
        Seconds from :meth:`CoordinatorActor.start` to the end.
    reports : list of ReportRow
        Every vertex report, in order of arrival.
    quiescence_rounds : int
        Quiescence rounds started (asynchronous schedule).
    """

    status: str
    steps: int
    max_update: float
    message: str
    max_change_history: list[float]
    energy_steps: list[int]
    energy: list[float]
    elapsed_s: float
    reports: list[ReportRow] = field(default_factory=list)
    quiescence_rounds: int = 0


@dataclass
class _StepTally:
    reports: int = 0
    max_change: float = 0.0
    non_finite: float | None = None


@dataclass
class _EnergyTally:
    reports: int = 0
    total: float = 0.0
    edges: dict[str, float] = field(default_factory=dict)


@dataclass
class _AsyncVertex:
    """State the coordinator keeps for one stepping vertex of an asynchronous run."""

    recent: deque[float]
    step: int = 0
    idle: bool = False
    energy_step: int = 0
    energy_total: float = 0.0
    energy_terms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Round:
    """A quiescence round and the replies to its current poll."""

    round_id: int
    started_s: float
    polls: int = 0
    replies: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)


class CoordinatorActor:
    """Async Ray actor that decides when a run ends (wrap with ``ray.remote``).

    Parameters
    ----------
    vertices : dict of str to ActorHandle
        Every vertex actor of the run, static ones included.
    stepping : list of str
        Names of the vertices that take steps and report.
    rule : StoppingRule
    record : RecordSettings, optional
        Stream the run's metrics to Parquet tables in this run directory.
    training : TrainingMonitor, optional
        Evaluate the weights the vertices send at epoch ends (training runs).
    """

    def __init__(
        self,
        vertices: dict[str, Any],
        stepping: list[str],
        rule: StoppingRule,
        record: RecordSettings | None = None,
        training: TrainingMonitor | None = None,
    ) -> None:
        self.vertices = vertices
        self.training = training
        self.stepping = list(stepping)
        self.rule = rule
        self.asynchronous = rule.schedule == "async"
        self.checked = 0
        self.first_change: float | None = None
        self.history: list[float] = []
        self.energy_steps: list[int] = []
        self.energy: list[float] = []
        self.steps: dict[int, _StepTally] = {}
        self.energy_tallies: dict[int, _EnergyTally] = {}
        self.rows: list[ReportRow] = []
        self.async_vertices = {
            name: _AsyncVertex(deque(maxlen=rule.convergence_window))
            for name in self.stepping
        }
        self.energy_round: set[str] = set()
        self.round: _Round | None = None
        self.rounds_started = 0
        self.next_round_s = 0.0
        self._round_timer: asyncio.Task | None = None
        self.end: RunEnd | None = None
        self.start_time = time.perf_counter()
        self._ended = asyncio.Event()
        self.record = record
        self.sink: MetricsSink | None = None
        self.pending_rows: dict[int, tuple[float, dict[str, float]]] = {}
        self.last_counters: dict[str, dict[str, int]] = {}
        self.last_staleness: dict[str, dict[int, int]] = {}
        # Synchronous runs: crossing rows by step, until the next step is checked.
        self.pending_crossings: dict[int, list[tuple[int, int, int]]] = {}
        self.crossing_rows: list[tuple[int, int, int]] = []
        self.crossings_closed = False

    async def start(self) -> None:
        """Open the tables, start the clock, and end at once if nothing steps."""
        if self.record is not None and self.sink is None:
            self.sink = MetricsSink(self.record)
            self.sink.start_flushing()
            if self.training is not None:
                self.sink.training(self.training.rows[0])
                self.sink.spectra(self.training.take_spectra())
        self.start_time = time.perf_counter()
        if self.asynchronous:
            self._keep_crossings(list(self.rule.static_crossings))
        if not self.stepping:
            self._check_complete_steps()

    async def finalize(
        self,
        final: dict[str, Any] | None,
        counters: dict[str, dict[str, int]] | None,
        staleness: dict[str, dict[int, int]] | None = None,
    ) -> dict[str, int] | None:
        """Write the final rows and close the tables.

        Parameters
        ----------
        final : dict, optional
            Keyword arguments of :meth:`MetricsSink.step` for the last
            convergence row and edge rows (the state the driver gathered, with
            ``error_vs_exact``). None after a failure.
        counters : dict of str to dict, optional
            Final counters of every vertex. None after a failure: then the
            counters each vertex sent with its last report are written.
        staleness : dict of str to dict, optional
            Final staleness histogram of every stepping vertex. When it is None
            (after a failure), the histogram each vertex sent with its last
            report is written.

        Returns
        -------
        dict of str to int or None
            Rows written per table, or None when the run records nothing.
        """
        if self.sink is None:
            return None
        if final is not None:
            self.sink.step(**final)
        self.sink.vertices(counters if counters is not None else self.last_counters)
        self.sink.staleness(staleness if staleness is not None else self.last_staleness)
        return self.sink.close()

    async def close_crossings(
        self,
        unreported: list[tuple[int, int, int]],
        final: list[tuple[int, int, int]],
    ) -> list[tuple[int, int, int]]:
        """Keep the crossing rows the vertices returned at the end, and return all.

        Parameters
        ----------
        unreported : list of tuple of (int, int, int)
            Rows the vertices counted but had not reported. Kept only under
            the asynchronous schedule, because under the synchronous one every
            row before the stopping step ``T`` came with a report.
        final : list of tuple of (int, int, int)
            Rows of each vertex's last step (see
            :class:`~sheafsim.runtime.vertex.EndDiagnostics`). Kept only when
            the run ended with ``converged`` or ``max_steps``, as in
            :func:`sheafsim.dynamics.diffuse`.

        Returns
        -------
        list of tuple of (int, int, int)
            Every crossing row ``(step, layer, count)`` of the run, sorted.
        """
        if not self.crossings_closed:
            self.crossings_closed = True
            rows = list(unreported) if self.asynchronous else []
            if self.end is not None and self.end.status in ("converged", "max_steps"):
                rows.extend(final)
                if not self.asynchronous:
                    last = self.end.steps
                    rows.extend(r for r in self.rule.static_crossings if r[0] == last)
            self._keep_crossings(rows)
        return sorted(self.crossing_rows)

    @ray.method(num_returns=0)
    async def report(
        self,
        vertex: str,
        first_step: int,
        changes: list[float],
        energy_step: int,
        energy_terms: dict[str, float],
        counters: dict[str, int] | None = None,
        idle: bool = False,
        params: dict[str, tuple[Any, Any]] | None = None,
        crossings: list[tuple[int, int, int]] | None = None,
        staleness: dict[int, int] | None = None,
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
        counters : dict of str to int, optional
            The vertex's counters (see :class:`ReportRow`).
        idle : bool
            Whether the vertex now waits for a new message. An idle report may
            have no changes, and then it adds no row.
        params : dict of str to tuple of ndarray, optional
            Training: ``(W, b)`` of every affine edge the vertex learns, by edge
            name, at the report's last step, which ends an epoch.
        crossings : list of tuple of (int, int, int), optional
            ReLU boundary crossings ``(step, layer, count)`` that the vertex
            counted since its previous report, rows with a count of 0 left out.
        staleness : dict of int to int, optional
            The vertex's staleness histogram so far: steps taken, by staleness.
        """
        if crossings:
            self._add_crossings(crossings)
        if self.end is not None:
            return
        if params and self.training is not None:
            try:
                row = self.training.add(first_step + len(changes) - 1, params)
                if row is not None and self.sink is not None:
                    self.sink.training(row)
                    self.sink.spectra(self.training.take_spectra())
            except Exception:  # the stopping rule must still see this report
                logger.exception("evaluating the weights of %s failed", vertex)
        if "soft_pins" in energy_terms:
            energy_terms = dict(energy_terms)
            energy_terms[pin_edge(vertex)] = energy_terms.pop("soft_pins")
        if counters:
            self.last_counters[vertex] = dict(counters)
            if staleness is not None:
                self.last_staleness[vertex] = dict(staleness)
        if self.asynchronous and not changes:
            self._mark_idle(vertex, first_step - 1, idle)
            self._check_async_end()
            return
        self.rows.append(
            ReportRow(
                time_s=time.perf_counter() - self.start_time,
                vertex=vertex,
                step=first_step + len(changes) - 1,
                max_update=_max_change(changes),
                energy_step=energy_step,
                energy=dict(energy_terms),
                counters=dict(counters or {}),
                idle=idle,
            )
        )
        if self.asynchronous:
            self._report_async(
                vertex, first_step, changes, energy_step, energy_terms, idle
            )
        else:
            self._report_sync(first_step, changes, energy_step, energy_terms)

    async def wait_end(self) -> RunEnd:
        """Wait until the stopping rule ends the run and return how it ended."""
        await self._ended.wait()
        assert self.end is not None
        return self.end

    async def progress(self) -> tuple[int, float, float]:
        """Return the run's step, its max one-step change and the seconds run.

        Synchronous: the last checked step and its change. Asynchronous: the
        max step over the vertices' last reports and the max of their last
        changes.
        """
        elapsed = time.perf_counter() - self.start_time
        if self.asynchronous:
            return self._async_step(), self._async_last_change(), elapsed
        change = self.history[-1] if self.history else math.nan
        return self.checked, change, elapsed

    async def last_finite_net(self) -> Any:
        """Return the last network with finite weights that training evaluated."""
        return None if self.training is None else self.training.last_net

    async def training_rows(self) -> list[dict[str, Any]]:
        """Return the training rows evaluated so far, epoch 0 first."""
        return [] if self.training is None else list(self.training.rows)

    async def spectra_rows(self) -> list[dict[str, Any]]:
        """Return the spectra rows computed so far, step 0 first."""
        return [] if self.training is None else list(self.training.spectra)

    async def report_rows(self) -> list[ReportRow]:
        """Return every report received so far, in order of arrival."""
        return list(self.rows)

    def _report_sync(
        self,
        first_step: int,
        changes: list[float],
        energy_step: int,
        energy_terms: dict[str, float],
    ) -> None:
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
        if self.sink is not None:
            energy.edges.update(energy_terms)
        if energy.reports == len(self.stepping):
            self.energy_steps.append(energy_step)
            total = 0.5 * (energy.total + self.rule.static_energy)
            self.energy.append(total)
            if self.sink is not None:
                # Written once step energy_step + 1 is checked, so that no row
                # follows the stopping step.
                self.pending_rows[energy_step + 1] = (total, energy.edges)
            del self.energy_tallies[energy_step]
        before = self.checked
        self._check_complete_steps()
        if self.end is None and self.checked > before:
            limit = min(self.checked + self.rule.window, self.rule.max_steps)
            for name in self.stepping:
                self.vertices[name].permit.remote(limit)

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
            # Every vertex has now reported the crossings of the previous step.
            crossings = self.pending_crossings.pop(step - 1, [])
            crossings.extend(r for r in self.rule.static_crossings if r[0] == step - 1)
            self._keep_crossings(crossings)
            pending = self.pending_rows.pop(step, None)
            if pending is not None and self.sink is not None:
                energy, edges = pending
                self.sink.step(self._elapsed(), step, energy, change, edges)
            self._apply_rule(step, change)

    def _add_crossings(self, rows: list[tuple[int, int, int]]) -> None:
        """Keep asynchronous rows at once and synchronous ones until checked.

        Asynchronous rows are kept even after the end, because the vertex that
        sent them does not send them again.
        """
        if self.asynchronous:
            self._keep_crossings(rows)
        elif self.end is None:
            for row in rows:
                self.pending_crossings.setdefault(row[0], []).append(row)

    def _keep_crossings(self, rows: list[tuple[int, int, int]]) -> None:
        if not rows:
            return
        self.crossing_rows.extend(rows)
        if self.sink is not None:
            self.sink.crossings(rows)

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
            self._finish("diverged", step, change, self._diverged_message(step, change))
        elif step >= rule.min_steps and change < rule.tol:
            self._finish(
                "converged", step, change, f"max one-step change {change:.3g} < tol"
            )
        elif step >= rule.max_steps:
            self._finish(
                "max_steps", step, change, f"reached max_steps={rule.max_steps}"
            )

    def _diverged_message(self, step: int, change: float) -> str:
        return (
            f"the one-step change grew to {change:.3g} at step {step}; "
            f"lower dt (now {self.rule.dt}) or alpha (now {self.rule.alpha})"
        )

    def _report_async(
        self,
        vertex: str,
        first_step: int,
        changes: list[float],
        energy_step: int,
        energy_terms: dict[str, float],
        idle: bool,
    ) -> None:
        state = self.async_vertices[vertex]
        for offset, change in enumerate(changes):
            step = first_step + offset
            self._record_async_change(step, change)
            if not math.isfinite(change):
                message = f"vertex {vertex!r} became NaN or infinite at step {step}"
                self._finish("non_finite", step, change, message)
                return
            if step == 1:
                self.first_change = max(self.first_change or 1.0, change)
            reference = self.first_change or 1.0
            if change > DIVERGENCE_FACTOR * reference:
                message = self._diverged_message(step, change)
                self._finish("diverged", step, change, f"vertex {vertex!r}: {message}")
                return
        # A late report's old changes can only delay the next round.
        state.recent.extend(changes)
        if energy_step >= state.energy_step:
            state.energy_step = energy_step
            state.energy_total = sum(energy_terms.values())
            state.energy_terms = dict(energy_terms)
        self._mark_idle(vertex, first_step + len(changes) - 1, idle)
        self._record_async_energy(vertex)
        self._check_async_end()

    def _mark_idle(self, vertex: str, step: int, idle: bool) -> None:
        """Record a report's step and idle flag, ignoring what a late report undoes.

        Ray runs the calls of an async actor in no guaranteed order, even
        calls from one caller (Ray docs, "Actor Task Execution Order"). So the
        step only grows, and only a report of a later step clears the flag.
        """
        state = self.async_vertices[vertex]
        if step > state.step or (step == state.step and idle):
            state.idle = idle
        state.step = max(state.step, step)

    def _check_async_end(self) -> None:
        """Start a quiescence round or end the run with ``max_steps`` if due."""
        if self.round is not None:
            return
        if self._windows_below_tol():
            self._consider_round()
            return
        max_steps = self.rule.max_steps
        states = list(self.async_vertices.values())
        some_reached = any(s.step >= max_steps for s in states)
        # NOTE: a message still in flight can wake an idle vertex, so the run
        # may end with max_steps while that vertex had one more step to take.
        if some_reached and all(s.step >= max_steps or s.idle for s in states):
            self._finish(
                "max_steps",
                self._async_step(),
                self._async_last_change(),
                f"a vertex reached max_steps={max_steps} and every other one "
                "reached it too or waited for a new message",
            )

    def _consider_round(self) -> None:
        """Start a quiescence round if the windows allow one, now or after backoff."""
        if self.round is not None or not self._windows_below_tol():
            return
        wait_s = self.next_round_s - self._elapsed()
        if wait_s <= 0.0:
            self._start_round()
        elif self._round_timer is None:
            # Idle vertices send no more reports, so check again after the
            # backoff instead of waiting for the next report.
            self._round_timer = asyncio.get_running_loop().create_task(
                self._consider_round_later(wait_s)
            )

    async def _consider_round_later(self, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        self._round_timer = None
        if self.end is None:
            self._check_async_end()

    def _record_async_change(self, step: int, change: float) -> None:
        while len(self.history) < step:
            self.history.append(
                self.rule.static_changes.get(len(self.history) + 1, 0.0)
            )
        previous = self.history[step - 1]
        if not math.isfinite(change):
            if math.isfinite(previous) or math.isnan(change):
                self.history[step - 1] = change
        elif math.isfinite(previous):
            self.history[step - 1] = max(previous, change)

    def _record_async_energy(self, vertex: str) -> None:
        self.energy_round.add(vertex)
        if len(self.energy_round) < len(self.stepping):
            return
        states = self.async_vertices.values()
        total = sum(s.energy_total for s in states) + self.rule.static_energy
        energy_step = min(s.energy_step for s in states)
        self.energy_steps.append(energy_step)
        self.energy.append(0.5 * total)
        self.energy_round.clear()
        if self.sink is not None:
            edges: dict[str, float] = {}
            for state in states:
                edges.update(state.energy_terms)
            self.sink.step(
                self._elapsed(),
                energy_step + 1,
                0.5 * total,
                self._async_last_change(),
                edges,
            )

    def _windows_below_tol(self) -> bool:
        rule = self.rule
        return all(
            s.step >= rule.min_steps
            and len(s.recent) == rule.convergence_window
            and max(s.recent) < rule.tol
            for s in self.async_vertices.values()
        )

    def _async_step(self) -> int:
        return max((s.step for s in self.async_vertices.values()), default=0)

    def _async_last_change(self) -> float:
        last = [s.recent[-1] for s in self.async_vertices.values() if s.recent]
        return max(last) if last else math.nan

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def _start_round(self) -> None:
        self.rounds_started += 1
        self.round = _Round(self.rounds_started, self._elapsed())
        logger.debug("quiescence round %d started", self.rounds_started)
        for handle in self.vertices.values():
            handle.pause.remote(self.rounds_started)

    @ray.method(num_returns=0)
    async def quiescence_report(
        self,
        round_id: int,
        vertex: str,
        counters: dict[str, int],
        next_change: float,
    ) -> None:
        """Record a paused vertex's reply to quiescence round ``round_id``.

        Parameters
        ----------
        round_id : int
        vertex : str
        counters : dict of str to int
            The vertex's counters when it replied.
        next_change : float
            The one-step change the vertex would make on the messages it had
            when it replied; 0 for a static vertex.
        """
        current = self.round
        if self.end is not None or current is None or current.round_id != round_id:
            return
        current.replies[vertex] = (counters, next_change)
        if len(current.replies) < len(self.vertices):
            return
        sent = sum(c["messages_sent"] for c, _ in current.replies.values())
        received = sum(c["messages_received"] for c, _ in current.replies.values())
        if received != sent:
            # Every vertex is paused, so no message is sent any more and the
            # ones in flight only need time to arrive.
            current.replies = {}
            current.polls += 1
            await asyncio.sleep(min(MAX_POLL_INTERVAL_S, 0.001 * 2**current.polls))
            if self.end is None and self.round is current:
                for handle in self.vertices.values():
                    handle.poll.remote(round_id)
            return
        self._close_round(current)

    def _close_round(self, current: _Round) -> None:
        changes = [change for _, change in current.replies.values()]
        worst = _max_change(changes)
        if worst < self.rule.tol:
            message = (
                f"every vertex stayed below tol for {self.rule.convergence_window} "
                f"steps, and with no message in flight the max one-step change "
                f"was {worst:.3g} < tol"
            )
            self._finish("converged", self._async_step(), worst, message)
            return
        logger.debug(
            "quiescence round %d: max one-step change %.3g >= tol after %d polls; "
            "resuming",
            current.round_id,
            worst,
            current.polls,
        )
        self.round = None
        now = self._elapsed()
        self.next_round_s = now + ROUND_BACKOFF * (now - current.started_s)
        for state in self.async_vertices.values():
            # A resumed vertex takes convergence_window fresh steps unless it
            # has reached max_steps.
            state.recent.clear()
            state.idle = False
        for handle in self.vertices.values():
            handle.resume.remote(current.round_id)
        # With every vertex at max_steps no report follows, so check now.
        self._check_async_end()

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
            reports=self.rows,
            quiescence_rounds=self.rounds_started,
        )
        stop_step = None if self.asynchronous else step
        for handle in self.vertices.values():
            handle.stop.remote(stop_step)
        logger.debug("run ended: %s at step %d after %.3f s", status, step, elapsed)
        self._ended.set()


def _max_change(changes: list[float]) -> float:
    """Return the max of ``changes``, NaN over infinity over finite values."""
    if not changes:
        return math.nan
    worst = max((c for c in changes if math.isfinite(c)), default=-math.inf)
    for change in changes:
        if math.isnan(change):
            return change
        if math.isinf(change):
            worst = change
    return worst
