"""Driver side of one actor run: start the actors, wait for the end, clean up.

:class:`ActorRun` creates one named actor per vertex
(``sheafsim-<run id>-<vertex>``) and a coordinator, and starts every vertex
loop. It then waits on the coordinator's end and on every vertex loop at once.
A vertex actor that raises or dies therefore ends the run at once with a
:class:`~sheafsim.errors.RuntimeFailure` that names it. That exception carries
the coordinator's reports so far in its ``reports`` attribute.

A run that records metrics places its coordinator on the driver's node, so the
Parquet tables it streams land in the driver's file system.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sheafsim.errors import RuntimeFailure
from sheafsim.runtime.coordinator import (
    CoordinatorActor,
    ReportRow,
    RunEnd,
    StoppingRule,
)
from sheafsim.runtime.metrics import RecordSettings, TrainingMonitor
from sheafsim.runtime.spec import RunSettings, VertexSpec
from sheafsim.runtime.vertex import EndDiagnostics, VertexActor

__all__ = ["ActorRun", "ProgressCallback"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, float, float], None]

# Seconds the driver waits for the coordinator's reports after a failure.
REPORTS_TIMEOUT_S = 2.0

# Seconds the driver waits, after the end, for the messages still in flight to
# arrive before it reads the final counters.
SETTLE_TIMEOUT_S = 5.0

_RemoteVertex = ray.remote(VertexActor)
_RemoteCoordinator = ray.remote(CoordinatorActor)


class ActorRun:
    """Actors of one run and the driver's side of the protocol.

    Parameters
    ----------
    specs : list of VertexSpec
    settings : RunSettings
    rule : StoppingRule
    record : RecordSettings, optional
        Tables for the coordinator to stream.
    training : TrainingMonitor, optional
    mask_layers : mapping of str to int, optional
        Layer ``l`` of every pre-activation vertex ``z_l`` whose ReLU boundary
        crossings the run counts, by vertex name.
    gpus_per_actor : float, optional
        GPU share that Ray reserves for each stepping vertex actor (see
        :func:`~sheafsim.runtime.gpu.place_on_gpus`); None reserves no GPU.

    Attributes
    ----------
    staleness_counts : dict of str to dict of int to int
        After :meth:`execute`: steps taken by every stepping vertex, by the
        staleness of the messages they used.
    crossings : ndarray of int64, shape (n, 3)
        After :meth:`execute`: the crossing rows ``(step, layer, count)`` of
        the run, sorted (see
        :class:`~sheafsim.runtime.coordinator.CoordinatorActor`).
    """

    def __init__(
        self,
        specs: list[VertexSpec],
        settings: RunSettings,
        rule: StoppingRule,
        record: RecordSettings | None = None,
        training: TrainingMonitor | None = None,
        mask_layers: Mapping[str, int] | None = None,
        gpus_per_actor: float | None = None,
    ) -> None:
        self.training = training
        self.gpus_per_actor = gpus_per_actor
        self.specs = specs
        self.settings = settings
        self.rule = rule
        self.record = record
        self.mask_layers = dict(mask_layers or {})
        self.run_id = record.run_id if record is not None else uuid.uuid4().hex[:8]
        self.records_closed = False
        self.vertices: dict[str, Any] = {}
        self.coordinator: Any = None
        self.staleness_counts: dict[str, dict[int, int]] = {}
        self.crossings = np.zeros((0, 3), dtype=np.int64)

    def execute(
        self,
        progress: ProgressCallback | None,
        interval_s: float,
        timeout_s: float | None,
    ) -> tuple[RunEnd, dict[str, np.ndarray], dict[str, dict[str, int]], float]:
        """Start the actors, wait for the end and gather the final stalks.

        Returns
        -------
        end : RunEnd
        final : dict of str to ndarray
            Final stalk of every vertex.
        stats : dict of str to dict
            Final counters of every vertex (see
            :class:`~sheafsim.runtime.vertex.VertexCounters`).
        startup_s : float
            Seconds spent starting the actors.

        Raises
        ------
        RuntimeFailure
            With attribute ``reports``: the coordinator's report rows up to the
            failure, or None if they could not be fetched within
            ``REPORTS_TIMEOUT_S`` seconds.
        """
        try:
            return self._execute(progress, interval_s, timeout_s)
        except RuntimeFailure as failure:
            failure.reports = self._fetch_reports()  # type: ignore[attr-defined]
            self.finalize_records(None, None)
            raise
        except KeyboardInterrupt:
            # Ctrl-C: keep what the coordinator wrote, compacted if it can be.
            self.finalize_records(None, None)
            raise

    def finalize_records(
        self,
        final: dict[str, Any] | None,
        counters: dict[str, dict[str, int]] | None,
    ) -> dict[str, int] | None:
        """Have the coordinator write its last rows and close its tables.

        See :meth:`CoordinatorActor.finalize`. With ``counters``, it also sends
        the staleness histograms that :meth:`execute` gathered. Without them,
        the coordinator writes the histograms the vertices last reported. After
        a failure (``final`` None) a
        coordinator that does not reply within ``REPORTS_TIMEOUT_S`` seconds
        is logged and skipped: the part files it flushed stay readable.
        """
        if self.record is None or self.coordinator is None or self.records_closed:
            return None
        self.records_closed = True
        timeout = REPORTS_TIMEOUT_S if final is None else None
        staleness = self.staleness_counts if counters is not None else None
        try:
            rows: dict[str, int] | None = ray.get(
                self.coordinator.finalize.remote(final, counters, staleness),
                timeout=timeout,
            )
        except RayError as error:
            if final is not None:
                raise RuntimeFailure(
                    f"the coordinator of run {self.run_id} could not close its "
                    f"tables in {self.record.directory}: {_cause(error)}"
                ) from error
            logger.warning(
                "the tables of failed run %s were not compacted (%s); their part "
                "files stay readable",
                self.run_id,
                _cause(error),
            )
            return None
        return rows

    def _execute(
        self,
        progress: ProgressCallback | None,
        interval_s: float,
        timeout_s: float | None,
    ) -> tuple[RunEnd, dict[str, np.ndarray], dict[str, dict[str, int]], float]:
        start = time.perf_counter()
        deadline = math.inf if timeout_s is None else start + timeout_s
        for spec in self.specs:
            # SPREAD places the vertex actors over all nodes of a cluster.
            vertex_options: dict[str, Any] = {
                "name": f"sheafsim-{self.run_id}-{spec.name}",
                "scheduling_strategy": "SPREAD",
            }
            if self.gpus_per_actor is not None and not spec.static:
                vertex_options["num_gpus"] = self.gpus_per_actor
            self.vertices[spec.name] = _RemoteVertex.options(**vertex_options).remote(
                spec, self.settings, self.mask_layers.get(spec.name)
            )
        stepping = [spec.name for spec in self.specs if not spec.static]
        options: dict[str, Any] = {"name": f"sheafsim-{self.run_id}-coordinator"}
        if self.record is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False
            )
        self.coordinator = _RemoteCoordinator.options(**options).remote(
            self.vertices, stepping, self.rule, self.record, self.training
        )
        ready = {h.ready.remote(): name for name, h in self.vertices.items()}
        self._get_all(ready, deadline, "start")
        startup_s = time.perf_counter() - start
        logger.info(
            "started %d vertex actors for run %s in %.2f s",
            len(self.vertices),
            self.run_id,
            startup_s,
        )

        neighbours = {
            spec.name: {
                end.neighbour: self.vertices[end.neighbour] for end in spec.edges
            }
            for spec in self.specs
        }
        self._get_all(
            {self.coordinator.start.remote(): "coordinator"}, deadline, "start"
        )
        runs = {
            self.vertices[name].run.remote(neighbours[name], self.coordinator): name
            for name in self.vertices
        }
        end_ref = self.coordinator.wait_end.remote()
        end, final = self._wait_for_end(end_ref, runs, progress, interval_s, deadline)
        final.update(self._get_all(runs, deadline, "return its final stalk"))
        stats = self._settled_stats(deadline)
        self._gather_diagnostics(stepping, deadline)
        logger.info(
            "run %s ended: %s after %d steps in %.2f s",
            self.run_id,
            end.status,
            end.steps,
            end.elapsed_s,
        )
        return end, final, stats, startup_s

    def _gather_diagnostics(self, stepping: list[str], deadline: float) -> None:
        """Fetch the staleness histograms and complete the crossing rows."""
        refs = {self.vertices[n].end_diagnostics.remote(): n for n in stepping}
        replies: dict[str, EndDiagnostics] = self._get_all(
            refs, deadline, "return its diagnostics"
        )
        self.staleness_counts = {n: d.staleness for n, d in replies.items()}
        if not self.mask_layers:
            return
        unreported = [row for d in replies.values() for row in d.crossings]
        last = [row for d in replies.values() for row in d.final_crossings]
        reply = self.coordinator.close_crossings.remote(unreported, last)
        rows = self._get_all({reply: "coordinator"}, deadline, "close the crossings")
        self.crossings = np.asarray(rows["coordinator"], dtype=np.int64).reshape(-1, 3)

    def call_vertices(self, method: str, names: list[str]) -> dict[str, Any]:
        """Call ``method`` on the vertex actors ``names`` and return the replies."""
        refs = {getattr(self.vertices[n], method).remote(): n for n in names}
        return self._get_all(refs, math.inf, f"reply to {method}")

    def call_coordinator(self, method: str) -> Any:
        """Call ``method`` on the coordinator and return its reply."""
        reply = self._get_all(
            {getattr(self.coordinator, method).remote(): "coordinator"},
            math.inf,
            f"reply to {method}",
        )
        return reply["coordinator"]

    def _settled_stats(self, deadline: float) -> dict[str, dict[str, int]]:
        """Return every vertex's counters once all sent messages have arrived.

        The vertices have stopped, so only messages already in flight can still
        arrive. After ``SETTLE_TIMEOUT_S`` seconds this logs a warning and
        returns the counters as they are.
        """
        give_up = min(deadline, time.perf_counter() + SETTLE_TIMEOUT_S)
        wait_s = 0.001
        while True:
            refs = {h.stats.remote(): name for name, h in self.vertices.items()}
            stats = self._get_all(refs, deadline, "return its counters")
            sent = sum(s["messages_sent"] for s in stats.values())
            received = sum(s["messages_received"] for s in stats.values())
            if sent == received:
                return stats
            if time.perf_counter() + wait_s > give_up:
                logger.warning(
                    "run %s: %d messages sent but %d received %.1f s after the "
                    "end; returning the counters as they are",
                    self.run_id,
                    sent,
                    received,
                    SETTLE_TIMEOUT_S,
                )
                return stats
            time.sleep(wait_s)
            wait_s = min(2 * wait_s, 0.1)

    def _fetch_reports(self) -> list[ReportRow] | None:
        """Return the coordinator's reports so far, or None if they are unavailable."""
        if self.coordinator is None:
            return None
        try:
            rows: list[ReportRow] = ray.get(
                self.coordinator.report_rows.remote(), timeout=REPORTS_TIMEOUT_S
            )
        except RayError as error:
            logger.warning(
                "could not fetch the reports of failed run %s: %s",
                self.run_id,
                _cause(error),
            )
            return None
        return rows

    def _wait_for_end(
        self,
        end_ref: Any,
        runs: dict[Any, str],
        progress: ProgressCallback | None,
        interval_s: float,
        deadline: float,
    ) -> tuple[RunEnd, dict[str, np.ndarray]]:
        """Wait for the coordinator's end, failing fast if a vertex actor fails.

        ``runs`` maps each vertex's ``run`` ObjectRef to the vertex name; refs
        that finish normally are removed from it and their stalks returned.
        """
        final: dict[str, np.ndarray] = {}
        while True:
            wait_s = min(
                deadline - time.perf_counter(), interval_s if progress else math.inf
            )
            if wait_s <= 0:
                raise RuntimeFailure(self._timeout_message())
            ready, _ = ray.wait(
                [end_ref, *runs],
                num_returns=1,
                timeout=None if math.isinf(wait_s) else wait_s,
            )
            if not ready:
                if progress is not None:
                    self._call_progress(progress, deadline)
                continue
            if ready[0] == end_ref:
                try:
                    return ray.get(end_ref), final
                except RayError as error:
                    raise RuntimeFailure(
                        f"the coordinator of run {self.run_id} failed: {_cause(error)}"
                    ) from error
            # A vertex returns once it has the stop, which can arrive here before
            # the coordinator's own reply.
            final.update(self._get_all({ready[0]: runs.pop(ready[0])}, deadline, "run"))

    def _call_progress(self, progress: ProgressCallback, deadline: float) -> None:
        reply = self.coordinator.progress.remote()
        reply_by_name = self._get_all({reply: "coordinator"}, deadline, "report")
        step, change, elapsed = reply_by_name["coordinator"]
        progress(step, change, elapsed)

    def _get_all(self, refs: dict[Any, str], deadline: float, action: str) -> dict:
        """Return ``{name: result}`` for ``refs``, naming the actor that failed."""
        results = {}
        for ref, name in refs.items():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeFailure(self._timeout_message())
            try:
                result = ray.get(
                    ref, timeout=None if math.isinf(remaining) else remaining
                )
            except ray.exceptions.GetTimeoutError as error:
                raise RuntimeFailure(self._timeout_message()) from error
            except RayError as error:
                raise RuntimeFailure(
                    f"{_actor_label(name)} of run {self.run_id} failed to {action}: "
                    f"{_cause(error)}"
                ) from error
            results[name] = result
        return results

    def _timeout_message(self) -> str:
        return (
            f"run {self.run_id} timed out before the coordinator ended it; raise "
            "timeout_s or lower max_steps"
        )

    def kill_actors(self) -> None:
        """Kill every actor of the run, logging any actor that cannot be killed."""
        handles = list(self.vertices.values())
        if self.coordinator is not None:
            handles.append(self.coordinator)
        for handle in handles:
            try:
                ray.kill(handle, no_restart=True)
            except (RayError, ValueError) as error:
                logger.warning(
                    "could not kill an actor of run %s: %s", self.run_id, error
                )


def _actor_label(name: str) -> str:
    return "the coordinator" if name == "coordinator" else f"vertex actor {name!r}"


def _cause(error: RayError) -> str:
    """Return a one-line description of the exception behind a Ray error."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first_line}"
