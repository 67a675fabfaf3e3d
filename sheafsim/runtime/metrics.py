"""Parquet metrics that the coordinator streams while an actor run goes on.

The coordinator of a run started with a ``record_dir`` owns a
:class:`~sheafsim.recording.RunRecorder` and writes these tables there:

* ``convergence.parquet``: one row per report interval, once every stepping
  vertex has reported it, and a final row with ``error_vs_exact``;
* ``edges.parquet``: the discord of every edge at the same steps, soft-pin
  penalties included as edges of type ``pin``;
* ``crossings.parquet``: the ReLU boundary crossings of each layer, one row
  per step and layer with at least one (see
  :class:`~sheafsim.runtime.coordinator.CoordinatorActor`);
* ``vertices.parquet``: the counters of every vertex actor at the end;
* ``staleness.parquet``: the staleness histogram of every stepping vertex at
  the end;
* ``training.parquet`` for training runs: the losses and accuracies of the
  weights at the end of every epoch (see :class:`TrainingMonitor`).

Rows are flushed as part files at least every ``flush_seconds``, so the tables
are readable at any moment of the run (see :mod:`sheafsim.recording`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sheafsim.neural import NeuralSheaf
from sheafsim.recording import RunRecorder
from sheafsim.training import HISTORY_KEYS

__all__ = [
    "RecordSettings",
    "MetricsSink",
    "TrainingMonitor",
    "pin_edge",
    "ACTOR_TABLES",
]

logger = logging.getLogger(__name__)

ACTOR_TABLES = ("convergence", "edges", "vertices", "crossings", "staleness")
"""Tables the coordinator of an inference run on actors writes."""


def pin_edge(vertex: str) -> str:
    """Return the edge name under which a vertex's soft-pin penalty is recorded."""
    return f"pin:{vertex}"


@dataclass(frozen=True)
class RecordSettings:
    """Run directory, tables and edge metadata of the coordinator's records.

    Attributes
    ----------
    directory : str
        Absolute path of the run directory on the coordinator's node.
    run_id : str
        Value of the ``run_id`` column.
    edge_types : dict of str to tuple of (str, int or None)
        ``(edge_type, layer)`` of every edge, by edge name.
    static_edges : dict of str to float
        Discord of the edges whose two ends never move; repeated in every set
        of edge rows.
    flush_seconds : float
        Maximum time a row waits in memory before it is written.
    overwrite : bool
        Replace tables that already exist in ``directory``.
    tables : tuple of str
        Tables to open, keys of :data:`sheafsim.recording.SCHEMAS`. Rows of a
        table that is not open are dropped, except for ``convergence``,
        ``edges`` and ``vertices``, which must be open.
    """

    directory: str
    run_id: str
    edge_types: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    static_edges: dict[str, float] = field(default_factory=dict)
    flush_seconds: float = 1.0
    overwrite: bool = False
    tables: tuple[str, ...] = ACTOR_TABLES


class TrainingMonitor:
    """Evaluates the weights that the vertices send at the end of every epoch.

    Every vertex that learns an affine map sends ``(W_l, b_l)`` with its report
    of step ``e * epoch_steps``. Once all ``depth + 1`` layers of epoch ``e``
    are in, the monitor builds the network and computes its losses and
    accuracies with the ordinary forward pass, as :func:`sheafsim.train` does.

    Parameters
    ----------
    net : NeuralSheaf
        The network before training; epoch 0 is evaluated on it.
    data : list
        ``[(x, y), (x_test, y_test) or None]``.
    epoch_steps : int
    spectral_every : int
        Also compute the spectra row of :func:`sheafsim.train` at every step
        that is a multiple of this (a multiple of ``epoch_steps``); 0: never.
    spectral_samples : int
        Training inputs used for the spectra.
    """

    def __init__(
        self,
        net: NeuralSheaf,
        data: list,
        epoch_steps: int,
        spectral_every: int = 0,
        spectral_samples: int = 32,
    ) -> None:
        self.output = net.output
        self.layers = net.depth + 1
        self.data = data
        self.epoch_steps = epoch_steps
        self.classification = net.output != "identity"
        self.pending: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self.rows: list[dict[str, Any]] = []
        self.spectral_every = spectral_every
        self.spectral_x = data[0][0][:, :spectral_samples]
        self.spectra: list[dict[str, Any]] = []
        self.unwritten_spectra: list[dict[str, Any]] = []
        self.last_net = net
        self.rows.append(self._evaluate(0, 0, net))
        self._spectrum(0, 0, net)

    def _spectrum(self, epoch: int, step: int, net: NeuralSheaf) -> None:
        """Record the spectra row of ``net`` when ``step`` is due."""
        if not self.spectral_every or step % self.spectral_every:
            return
        from sheafsim.training import spectra_row

        row = spectra_row(net, self.spectral_x, epoch, step)
        self.spectra.append(row)
        self.unwritten_spectra.append(row)

    def take_spectra(self) -> list[dict[str, Any]]:
        """Return the spectra rows not yet handed out, and forget them."""
        rows, self.unwritten_spectra = self.unwritten_spectra, []
        return rows

    def _evaluate(self, epoch: int, step: int, net: NeuralSheaf) -> dict[str, Any]:
        from sheafsim.training import _evaluate

        scores = _evaluate(net, self.data, self.classification)
        return dict(zip(HISTORY_KEYS, [epoch, step, *scores], strict=True))

    def add(
        self, step: int, params: Mapping[str, tuple[np.ndarray, np.ndarray]]
    ) -> dict[str, Any] | None:
        """Store the maps a vertex sent at ``step``; return the epoch row when due."""
        epoch = step // self.epoch_steps
        layers = self.pending.setdefault(epoch, {})
        for edge, pair in params.items():
            layers[int(edge.removeprefix("affine"))] = pair
        if len(layers) < self.layers:
            return None
        del self.pending[epoch]
        weights = [layers[layer][0] for layer in range(1, self.layers + 1)]
        biases = [layers[layer][1].reshape(-1) for layer in range(1, self.layers + 1)]
        if not all(np.all(np.isfinite(a)) for a in [*weights, *biases]):
            # A diverged run: NeuralSheaf rejects non-finite weights.
            scores = [float("nan")] * (len(HISTORY_KEYS) - 2)
            row = dict(zip(HISTORY_KEYS, [epoch, step, *scores], strict=True))
        else:
            net = NeuralSheaf(weights, biases, output=self.output)  # type: ignore[arg-type]
            self.last_net = net
            row = self._evaluate(epoch, step, net)
            self._spectrum(epoch, step, net)
        self.rows.append(row)
        return row


class MetricsSink:
    """The coordinator's writer of the run tables.

    Parameters
    ----------
    settings : RecordSettings
    """

    def __init__(self, settings: RecordSettings) -> None:
        self.settings = settings
        self.recorder = RunRecorder(
            settings.directory,
            settings.run_id,
            tables=settings.tables,
            flush_rows=1000,
            flush_seconds=settings.flush_seconds,
            overwrite=settings.overwrite,
        )
        self.closed = False
        self.last_step = 0
        self.last_energy = math.nan
        self._flusher: asyncio.Task | None = None

    def start_flushing(self) -> None:
        """Flush buffered rows every ``flush_seconds`` from the running event loop.

        Without it, rows would wait in memory whenever no new row arrives, for
        example while every vertex waits in a quiescence round.
        """
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.settings.flush_seconds)
            if self.closed:
                return
            try:
                self.recorder.flush()
            except Exception:  # a failed flush keeps its rows for the next one
                logger.exception("periodic flush of %s failed", self.settings.directory)

    def step(
        self,
        time_s: float,
        step: int,
        energy: float,
        max_update: float,
        edges: Mapping[str, float],
        error_vs_exact: float | None = None,
    ) -> None:
        """Record one convergence row and the discord of every edge at ``step``."""
        if self.closed:
            return
        self.recorder.convergence(
            step, energy, max_update, error_vs_exact=error_vs_exact, time_s=time_s
        )
        discord = {**self.settings.static_edges, **edges}
        rows = []
        for name, value in discord.items():
            edge_type, layer = self.settings.edge_types.get(name, ("pin", None))
            rows.append(
                {
                    "time_s": time_s,
                    "step": step,
                    "edge": name,
                    "edge_type": edge_type,
                    "layer": layer,
                    "discord": value,
                }
            )
        self.recorder.edges(rows)
        self.last_step = step
        self.last_energy = energy

    def training(self, row: Mapping[str, Any]) -> None:
        """Record one row of ``training.parquet``."""
        if not self.closed:
            self.recorder.training(**row)

    def spectra(self, rows: list[dict[str, Any]]) -> None:
        """Record rows of ``spectra.parquet``, if that table is open."""
        if rows and not self.closed and "spectra" in self.recorder.writers:
            self.recorder.rows("spectra", rows)

    def vertices(self, counters: Mapping[str, Mapping[str, int]]) -> None:
        """Record the counters of every vertex, by vertex name."""
        if self.closed:
            return
        for vertex, values in counters.items():
            self.recorder.vertex(
                vertex,
                int(values.get("steps", 0)),
                int(values.get("messages_sent", 0)),
                int(values.get("messages_received", 0)),
                int(values.get("max_staleness", 0)),
            )

    def crossings(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Record crossing rows ``(step, layer, count)`` in ``crossings.parquet``."""
        if self.closed or "crossings" not in self.recorder.writers:
            return
        self.recorder.rows(
            "crossings",
            [
                {"step": int(step), "layer": int(layer), "crossings": int(count)}
                for step, layer, count in rows
            ],
        )

    def staleness(self, histograms: Mapping[str, Mapping[int, int]]) -> None:
        """Record the staleness histogram of every vertex, by vertex name.

        Rows are sorted by vertex name and staleness. A vertex without steps
        has no rows.
        """
        if self.closed or "staleness" not in self.recorder.writers:
            return
        rows = [
            {"vertex": vertex, "staleness": int(staleness), "steps": int(steps)}
            for vertex in sorted(histograms)
            for staleness, steps in sorted(histograms[vertex].items())
            if steps
        ]
        self.recorder.rows("staleness", rows)

    def close(self) -> dict[str, Any]:
        """Flush and compact every table; return the rows written per table."""
        if not self.closed:
            self.closed = True
            if self._flusher is not None:
                self._flusher.cancel()
            self.recorder.close()
        return {
            name: writer.rows_written for name, writer in self.recorder.writers.items()
        }
