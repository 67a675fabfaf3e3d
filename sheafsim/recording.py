"""Streaming Parquet tables for the metrics of a run.

A Parquet file is readable only once its footer is written, so a single
``pyarrow.parquet.ParquetWriter`` kept open for a whole run leaves nothing
readable if the process dies. :class:`TableWriter` therefore uses two layouts:

* While the run goes on, ``<name>.parquet`` is a directory. Each flush writes
  the buffered rows as one complete file ``part-NNNNNN.parquet`` in it. The
  file is written under a hidden temporary name and then renamed with
  :func:`os.replace`, so every visible part has its footer. The directory is
  readable with :func:`read_table`, ``pyarrow.parquet.read_table`` or
  ``pyarrow.dataset``. The last two skip names starting with ``.`` by default
  (the ``ignore_prefixes`` option of ``pyarrow.dataset.dataset``).
* :meth:`TableWriter.close` compacts the parts into one file at the same path.
  It writes ``.<name>.parquet.compact-tmp``, renames the part directory to
  ``.<name>.parquet.parts``, renames the compacted file to ``<name>.parquet``
  and then deletes the parts.

:func:`read_table` also reads the hidden part directory when ``<name>.parquet``
is missing, which covers the moment between the two renames and a process
killed there. A process killed at any moment loses only its unflushed buffer.
NOTE: no file is fsynced, so this protects against the death of the process,
not against a power loss or a kernel crash.
"""

from __future__ import annotations

import logging
import numbers
import operator
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sheafsim.errors import InvalidValueError

__all__ = [
    "SCHEMAS",
    "EDGE_TYPES",
    "TableWriter",
    "RunRecorder",
    "read_table",
    "existing_tables",
    "remove_table",
]

logger = logging.getLogger(__name__)

EDGE_TYPES = ("affine", "activation", "output", "pin")
"""Allowed values of the ``edge_type`` column of ``edges.parquet``."""


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


SCHEMAS: dict[str, pa.Schema] = {
    "convergence": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("time_s", pa.float64()),
            _required("step", pa.int64()),
            _required("energy", pa.float64()),
            _required("max_update", pa.float64()),
            pa.field("error_vs_exact", pa.float64()),
        ]
    ),
    "edges": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("time_s", pa.float64()),
            _required("step", pa.int64()),
            _required("edge", pa.string()),
            _required("edge_type", pa.string()),
            pa.field("layer", pa.int64()),
            _required("discord", pa.float64()),
        ]
    ),
    "vertices": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("vertex", pa.string()),
            _required("steps", pa.int64()),
            _required("messages_sent", pa.int64()),
            _required("messages_received", pa.int64()),
            _required("max_staleness", pa.int64()),
        ]
    ),
    "training": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("epoch", pa.int64()),
            _required("step", pa.int64()),
            pa.field("train_loss", pa.float64()),
            pa.field("test_loss", pa.float64()),
            pa.field("train_accuracy", pa.float64()),
            pa.field("test_accuracy", pa.float64()),
        ]
    ),
    # The same columns as "training", for the gradient-descent baseline of a
    # training run: one row per logged gradient step (epoch = step).
    "baseline": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("epoch", pa.int64()),
            _required("step", pa.int64()),
            pa.field("train_loss", pa.float64()),
            pa.field("test_loss", pa.float64()),
            pa.field("train_accuracy", pa.float64()),
            pa.field("test_accuracy", pa.float64()),
        ]
    ),
    # ReLU boundary crossings: how many (neuron, sample) masks of a layer
    # changed between the mask used at step t and the one used at step t + 1.
    # Only steps with at least one crossing have a row.
    "crossings": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("step", pa.int64()),
            _required("layer", pa.int64()),
            _required("crossings", pa.int64()),
        ]
    ),
    # Staleness histogram of every stepping vertex actor: how many of its steps
    # used, at worst over its edges, a message this many steps old.
    "staleness": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("vertex", pa.string()),
            _required("staleness", pa.int64()),
            _required("steps", pa.int64()),
        ]
    ),
    # Extreme eigenvalues of the free Laplacian over a set of inputs, tracked
    # during training: median and quartiles over the inputs.
    "spectra": pa.schema(
        [
            _required("run_id", pa.string()),
            _required("epoch", pa.int64()),
            _required("step", pa.int64()),
            _required("samples", pa.int64()),
            _required("lambda_min_median", pa.float64()),
            _required("lambda_min_q25", pa.float64()),
            _required("lambda_min_q75", pa.float64()),
            _required("lambda_max_median", pa.float64()),
            _required("lambda_max_q25", pa.float64()),
            _required("lambda_max_q75", pa.float64()),
        ]
    ),
}
"""Arrow schema of each table of a run, keyed by table name (file stem)."""

_PART_PREFIX = "part-"
_COMPACT_ROW_GROUP_ROWS = 65_536  # rows per row group of a compacted file
# A reader may race a compaction that removes the parts. On a loaded machine
# the renames and the deletion can take tens of milliseconds, so the reader
# retries with a growing pause, about 0.5 s in all.
_READ_ATTEMPTS = 10
_READ_RETRY_SECONDS = 0.01


def _parts_dir(path: Path) -> Path:
    return path.with_name(f".{path.name}.parts")


def _compact_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.compact-tmp")


def _part_files(directory: Path) -> list[Path]:
    """Return the visible part files of ``directory``, in the order written."""
    parts = [
        p
        for p in directory.iterdir()
        if p.name.startswith(_PART_PREFIX) and p.suffix == ".parquet"
    ]
    return sorted(parts, key=lambda p: int(p.stem[len(_PART_PREFIX) :]))


def _table_paths(path: Path) -> list[Path]:
    """Return the paths that hold the table ``path`` or leftovers of it."""
    leftovers = [path, _parts_dir(path), _compact_tmp(path)]
    return [p for p in leftovers if p.exists()]


def existing_tables(
    directory: str | os.PathLike[str], tables: Iterable[str] = tuple(SCHEMAS)
) -> list[str]:
    """Return the names among ``tables`` that ``directory`` already contains."""
    directory = Path(directory)
    return [name for name in tables if _table_paths(directory / f"{name}.parquet")]


def remove_table(path: str | os.PathLike[str]) -> None:
    """Delete the table ``path`` with its part directory and leftovers, if any."""
    for leftover in _table_paths(Path(path)):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def _read_once(path: Path) -> pa.Table:
    if path.is_file():
        return pq.read_table(path)
    directory = path if path.is_dir() else _parts_dir(path)
    if not directory.is_dir():
        raise FileNotFoundError(path)
    parts = _part_files(directory)
    if not parts and directory != path:
        # The hidden parts of a finished compaction, being deleted: the
        # compacted file is in place by now, so the caller reads again.
        raise FileNotFoundError(directory)
    if not parts:
        raise InvalidValueError(
            f"table directory {path} contains no part-*.parquet files, so "
            "TableWriter did not write it"
        )
    return pa.concat_tables([pq.read_table(part) for part in parts])


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """Read a table written by :class:`TableWriter`, during or after the run.

    Parameters
    ----------
    path : str or path-like
        ``<name>.parquet``, either the compacted file or the part directory.

    Returns
    -------
    pyarrow.Table
        All flushed rows, in the order they were flushed.

    Raises
    ------
    InvalidValueError
        If the table is missing, or a file of it is truncated or not Parquet.
    """
    path = Path(path)
    attempt = 1
    while True:
        try:
            return _read_once(path)
        except (pa.ArrowException, OSError) as error:
            # A compaction may move the parts between listing and reading them,
            # which fails with ENOENT or ENOTDIR, so a failed read is retried.
            if attempt < _READ_ATTEMPTS:
                attempt += 1
                time.sleep(_READ_RETRY_SECONDS * attempt)
                continue
            if isinstance(error, FileNotFoundError):
                raise InvalidValueError(
                    f"Parquet table {path} not found; check the run directory "
                    "and the table name"
                ) from error
            raise InvalidValueError(
                f"Parquet table {path} is corrupt or unreadable: {error}"
            ) from error


def _value_fits(field: pa.Field, value: Any) -> bool:
    """Check that a non-null ``value`` converts to the type of ``field``."""
    if pa.types.is_string(field.type):
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if pa.types.is_int64(field.type):
        return isinstance(value, numbers.Integral) and -(2**63) <= int(value) < 2**63
    if pa.types.is_floating(field.type):
        return isinstance(value, numbers.Real)
    try:
        pa.scalar(value, type=field.type)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


class TableWriter:
    """Buffered writer of one Parquet table, readable while it is written.

    Parameters
    ----------
    path : str or path-like
        Final path of the table, such as ``run/convergence.parquet``. See the
        module docstring for the layout during and after the run.
    schema : pyarrow.Schema
        Columns of the table. Fields with ``nullable=False`` are required.
    flush_rows : int
        Flush once this many rows are buffered.
    flush_seconds : float
        Flush on an append that comes this many seconds after the last flush.
        Without appends, rows wait in the buffer until :meth:`flush` or
        :meth:`close`. ``math.inf`` disables the time rule.
    compact : bool
        Whether :meth:`close` compacts the parts into one file.
    overwrite : bool
        Whether to delete an existing table at ``path``. Otherwise an existing
        table raises :class:`InvalidValueError`.

    Notes
    -----
    Flushes write files synchronously. A lock makes the methods safe to call
    from several threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        *,
        compact: bool = True,
        overwrite: bool = False,
    ) -> None:
        try:
            if isinstance(flush_rows, bool):
                raise TypeError
            flush_rows = operator.index(flush_rows)
        except TypeError:
            raise InvalidValueError(
                f"flush_rows must be an int, got {flush_rows!r}"
            ) from None
        if flush_rows < 1:
            raise InvalidValueError(f"flush_rows must be at least 1, got {flush_rows}")
        if not flush_seconds > 0:
            raise InvalidValueError(
                f"flush_seconds must be positive, got {flush_seconds!r}"
            )

        self.path = Path(path)
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = float(flush_seconds)
        self.compact = compact
        self.rows_written = 0
        self._table = self.path.stem
        self._fields = {field.name: field for field in schema}
        self._buffer: list[dict[str, Any]] = []
        self._next_part = 0
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()
        self._closed = False

        self._prepare_path(overwrite)
        # A first empty part gives readers the schema before any row is flushed.
        self._write_part(schema.empty_table())
        logger.info("opened Parquet table %s", self.path)

    def _prepare_path(self, overwrite: bool) -> None:
        existing = _table_paths(self.path)
        if existing and not overwrite:
            raise InvalidValueError(
                f"table {self.path} already exists; pass overwrite=True or "
                "choose a new run directory"
            )
        for leftover in existing:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        self.path.mkdir(parents=True)

    @property
    def rows_buffered(self) -> int:
        """Number of appended rows not yet flushed."""
        return len(self._buffer)

    def _check_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        unknown = [name for name in row if name not in self._fields]
        if unknown:
            raise InvalidValueError(
                f"unknown column {unknown[0]!r} for table {self._table}; "
                f"expected columns {list(self._fields)}"
            )
        for name, field in self._fields.items():
            value = row.get(name)
            if value is None:
                if not field.nullable:
                    raise InvalidValueError(
                        f"missing required column {name!r} for table {self._table}"
                    )
            elif not _value_fits(field, value):
                raise InvalidValueError(
                    f"invalid value {value!r} in column {name!r} of table "
                    f"{self._table}; expected {field.type}"
                )
        return dict(row)

    def append(self, row: Mapping[str, Any]) -> None:
        """Buffer one row, then flush if a flush rule is met.

        Raises
        ------
        InvalidValueError
            If the writer is closed, or the row has an unknown column, lacks a
            required column or contains a value of the wrong type.
        """
        self.extend([row])

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer several rows, then flush if a flush rule is met.

        Every row is checked before any is buffered, so a bad row adds nothing.
        If the flush fails, the rows stay buffered and the error propagates.
        """
        with self._lock:
            if self._closed:
                raise InvalidValueError(
                    f"table {self.path} is closed; create a new TableWriter to "
                    "write more rows"
                )
            checked = [self._check_row(row) for row in rows]
            self._buffer.extend(checked)
            elapsed = time.monotonic() - self._last_flush
            if len(self._buffer) >= self.flush_rows or elapsed >= self.flush_seconds:
                self.flush()

    def _write_part(self, table: pa.Table) -> None:
        name = f"{_PART_PREFIX}{self._next_part:06d}.parquet"
        tmp = self.path / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.path / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._next_part += 1

    def flush(self) -> None:
        """Write the buffered rows as one new part file.

        On a failed write the rows stay in the buffer for the next flush, and
        the parts written before are untouched.
        """
        with self._lock:
            if not self._buffer:
                self._last_flush = time.monotonic()
                return
            table = pa.Table.from_pylist(self._buffer, schema=self.schema)
            self._write_part(table)
            self.rows_written += table.num_rows
            self._buffer = []
            self._last_flush = time.monotonic()
            logger.debug("flushed %d rows to %s", table.num_rows, self.path)

    def _compact(self) -> None:
        parts_dir = _parts_dir(self.path)
        tmp = _compact_tmp(self.path)
        try:
            with pq.ParquetWriter(tmp, self.schema) as writer:
                pending: list[pa.Table] = []
                for part in _part_files(self.path):
                    pending.append(pq.read_table(part, schema=self.schema))
                    if sum(t.num_rows for t in pending) >= _COMPACT_ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(pending))
                        pending = []
                if pending:
                    writer.write_table(pa.concat_tables(pending))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(self.path, parts_dir)
        os.replace(tmp, self.path)
        shutil.rmtree(parts_dir)

    def close(self) -> None:
        """Flush the buffer, then compact the parts if ``compact`` is set.

        Calling it again does nothing. If the flush fails, the writer stays
        open so that the call can be retried. If the compaction fails, the
        writer is closed and the part directory stays readable.
        """
        with self._lock:
            if self._closed:
                return
            self.flush()
            self._closed = True
            if self.compact:
                try:
                    self._compact()
                except (pa.ArrowException, OSError):
                    logger.exception(
                        "compaction of %s failed; its parts remain readable",
                        self.path,
                    )
                    raise
            logger.info(
                "closed Parquet table %s (%d rows)", self.path, self.rows_written
            )

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RunRecorder:
    """The metric tables of one run, written to ``<directory>/<table>.parquet``.

    Only paths and pyarrow objects are created, so it can be constructed inside
    a Ray actor. Methods that record a row fill in ``run_id``. The ``time_s``
    of convergence and edge rows defaults to the seconds since the recorder was
    constructed.

    Parameters
    ----------
    directory : str or path-like
        Run directory, created if missing.
    run_id : str
    tables : iterable of str
        Tables to open, keys of :data:`SCHEMAS`.
    flush_rows, flush_seconds, compact, overwrite
        Passed to each :class:`TableWriter`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        run_id: str,
        tables: Iterable[str] = ("convergence", "edges", "vertices"),
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        *,
        compact: bool = True,
        overwrite: bool = False,
    ) -> None:
        tables = tuple(tables)
        unknown = [name for name in tables if name not in SCHEMAS]
        if unknown:
            raise InvalidValueError(
                f"unknown table {unknown[0]!r}; expected names from {list(SCHEMAS)}"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self._start = time.monotonic()
        self.writers: dict[str, TableWriter] = {}
        try:
            for name in tables:
                self.writers[name] = TableWriter(
                    self.directory / f"{name}.parquet",
                    SCHEMAS[name],
                    flush_rows,
                    flush_seconds,
                    compact=compact,
                    overwrite=overwrite,
                )
        except BaseException:
            self.close()
            raise

    def _writer(self, table: str) -> TableWriter:
        if table not in self.writers:
            raise InvalidValueError(
                f"table {table!r} is not open in this recorder; "
                f"add it to tables={tuple(self.writers)}"
            )
        return self.writers[table]

    def _time(self, time_s: float | None) -> float:
        return time.monotonic() - self._start if time_s is None else time_s

    def convergence(
        self,
        step: int,
        energy: float,
        max_update: float,
        error_vs_exact: float | None = None,
        time_s: float | None = None,
    ) -> None:
        """Record the energy and max one-step change of the run at ``step``."""
        row = {
            "run_id": self.run_id,
            "time_s": self._time(time_s),
            "step": step,
            "energy": energy,
            "max_update": max_update,
            "error_vs_exact": error_vs_exact,
        }
        self._writer("convergence").append(row)

    def edge(
        self,
        step: int,
        edge: str,
        edge_type: str,
        discord: float,
        layer: int | None = None,
        time_s: float | None = None,
    ) -> None:
        """Record the discord of one edge at ``step``."""
        row = {
            "time_s": time_s,
            "step": step,
            "edge": edge,
            "edge_type": edge_type,
            "layer": layer,
            "discord": discord,
        }
        self.edges([row])

    def edges(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record several edge rows, which may omit ``run_id`` and ``time_s``."""
        now = self._time(None)
        filled = []
        for row in rows:
            edge_type = row.get("edge_type")
            if edge_type is not None and edge_type not in EDGE_TYPES:
                raise InvalidValueError(
                    f"invalid edge_type {edge_type!r} for table edges; "
                    f"expected one of {EDGE_TYPES}"
                )
            full = {"run_id": self.run_id, **row}
            if full.get("time_s") is None:
                full["time_s"] = now
            filled.append(full)
        self._writer("edges").extend(filled)

    def vertex(
        self,
        vertex: str,
        steps: int,
        messages_sent: int,
        messages_received: int,
        max_staleness: int,
    ) -> None:
        """Record the message counters of one vertex actor."""
        row = {
            "run_id": self.run_id,
            "vertex": vertex,
            "steps": steps,
            "messages_sent": messages_sent,
            "messages_received": messages_received,
            "max_staleness": max_staleness,
        }
        self._writer("vertices").append(row)

    def training(
        self,
        epoch: int,
        step: int,
        train_loss: float | None = None,
        test_loss: float | None = None,
        train_accuracy: float | None = None,
        test_accuracy: float | None = None,
    ) -> None:
        """Record the losses and accuracies of one training step."""
        row = {
            "run_id": self.run_id,
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "train_accuracy": train_accuracy,
            "test_accuracy": test_accuracy,
        }
        self._writer("training").append(row)

    def rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record rows of any open table; ``run_id`` is filled in."""
        self._writer(table).extend({"run_id": self.run_id, **row} for row in rows)

    def _each_writer(self, method: str) -> None:
        """Call ``method`` on every writer, then re-raise the first failure."""
        errors: list[BaseException] = []
        for writer in self.writers.values():
            try:
                getattr(writer, method)()
            except Exception as error:  # the other tables still get the call
                logger.error("%s of %s failed: %s", method, writer.path, error)
                errors.append(error)
        if errors:
            raise errors[0]

    def flush(self) -> None:
        """Flush every table, even when an earlier one fails."""
        self._each_writer("flush")

    def close(self) -> None:
        """Close every table, even when an earlier one fails. Idempotent."""
        self._each_writer("close")

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
