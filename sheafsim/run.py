"""Read a run directory back: its JSON files, its Parquet tables and edge discord.

:func:`load_run` opens what ``sheafsim run`` (or
:func:`sheafsim.experiment.run_experiment`) wrote: ``config.json``,
``summary.json`` and every table of :data:`sheafsim.recording.SCHEMAS` that is
present. Tables are read with :func:`sheafsim.recording.read_table`, so the run
may still be going on or may have been killed. The returned :class:`Run` turns
``edges.parquet`` into discord sums by edge, edge type or layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sheafsim.errors import InvalidValueError, SheafsimError
from sheafsim.recording import EDGE_TYPES, SCHEMAS, existing_tables, read_table

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = ["Run", "RunReadError", "TableNotFoundError", "load_run", "JSON_FILES"]

JSON_FILES = ("config.json", "summary.json")
"""JSON files of a run directory that :func:`load_run` reads."""

Grouping = Literal["type", "layer", "edge"]
_GROUPINGS = ("type", "layer", "edge")

_CONTENTS = (
    "a run directory contains config.json, summary.json or Parquet tables such "
    "as convergence.parquet, as written by 'sheafsim run CONFIG --output DIR'"
)


class RunReadError(SheafsimError, ValueError):
    """A run directory, or a file in it, is missing or unreadable."""


class TableNotFoundError(SheafsimError, KeyError):
    """A table was requested that the run directory does not contain."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of the message, quotes included.
        return str(self.args[0]) if self.args else ""


class Run:
    """The files of one run directory, read by :func:`load_run`.

    Attributes
    ----------
    path : pathlib.Path
        The run directory.
    summary : dict or None
        Contents of ``summary.json``, or None while the run goes on, after a
        crash, or when the file is unreadable.
    config : dict or None
        Contents of ``config.json``, the resolved configuration, or None when
        the file is missing or unreadable.
    tables : dict of str to pyarrow.Table
        Every readable table, keyed by name (``"convergence"``, ``"edges"``,
        ...), in the order of :data:`sheafsim.recording.SCHEMAS`.
    problems : dict of str to str
        Message for each file that exists but could not be read, keyed by file
        name (``"edges.parquet"``). Empty after a load with ``strict=True``.
    """

    def __init__(
        self,
        path: Path,
        summary: dict[str, Any] | None,
        config: dict[str, Any] | None,
        tables: dict[str, pa.Table],
        problems: dict[str, str],
    ) -> None:
        self.path = path
        self.summary = summary
        self.config = config
        self.tables = tables
        self.problems = problems

    def __repr__(self) -> str:
        return (
            f"Run({str(self.path)!r}, tables={list(self.tables)}, "
            f"problems={list(self.problems)})"
        )

    def __contains__(self, name: object) -> bool:
        return name in self.tables

    def __getitem__(self, name: str) -> pa.Table:
        """Return the table ``name``, such as ``run["edges"]``.

        Raises
        ------
        TableNotFoundError
            If the run has no readable table of that name. The message lists
            the tables present.
        """
        if name in self.tables:
            return self.tables[name]
        present = ", ".join(self.tables) or "none"
        file_name = f"{name}.parquet"
        if file_name in self.problems:
            reason = f"{file_name} is unreadable ({self.problems[file_name]})"
        elif name in SCHEMAS:
            reason = f"{name}.parquet is not in the run"
        else:
            reason = f"{name!r} is not a table name; names are {', '.join(SCHEMAS)}"
        raise TableNotFoundError(
            f"no table {name!r} in run {self.path}: {reason}. Tables present: {present}"
        )

    def to_pandas(self, name: str) -> pandas.DataFrame:
        """Return the table ``name`` as a pandas DataFrame.

        Raises
        ------
        ImportError
            If pandas is not installed.
        TableNotFoundError
            If the run has no readable table ``name``.
        """
        table = self[name]
        _require("pandas", "to_pandas")
        return table.to_pandas()

    def to_polars(self, name: str) -> polars.DataFrame:
        """Return the table ``name`` as a polars DataFrame.

        Raises
        ------
        ImportError
            If polars is not installed.
        TableNotFoundError
            If the run has no readable table ``name``.
        """
        table = self[name]
        polars = _require("polars", "to_polars")
        frame = polars.from_arrow(table)
        assert isinstance(frame, polars.DataFrame)  # a Table gives a DataFrame
        return frame

    def _edges(self) -> pa.Table:
        """Return the edge table with one row per (step, edge), the last written."""
        edges = self["edges"]
        # An asynchronous run can report the same smallest step twice, so a
        # (step, edge) pair may have several rows. The last one written counts.
        numbered = edges.append_column(
            "_row", pa.array(np.arange(edges.num_rows, dtype=np.int64))
        )
        last = numbered.group_by(["step", "edge"], use_threads=False).aggregate(
            [("_row", "max")]
        )
        rows = pc.sort_indices(last["_row_max"])
        return edges.take(pc.take(last["_row_max"], rows))

    def discord(
        self, by: Grouping = "type", step: int | None = None
    ) -> dict[Any, float]:
        """Sum the edge discord of ``edges.parquet`` at one step.

        The discord of an edge is the batch mean of its squared residual norm.
        Without soft pins the sum over all edges is twice the sheaf energy of
        ``convergence.parquet`` at the same step.

        Parameters
        ----------
        by : {"type", "layer", "edge"}
            ``"edge"`` maps each edge name to its discord. ``"type"`` sums over
            ``edge_type`` (keys ``affine``, ``activation``, ``output`` and, with
            soft pins, ``pin``). ``"layer"`` sums over the layer column, so
            layer ``l`` adds ``affine{l}`` and ``activation{l}``, and the output
            edge counts to the last layer. Pin edges have no layer and are left
            out of the layer sums.
        step : int, optional
            Step to read, by default the last step of the table.

        Returns
        -------
        dict
            Group to discord, keys in network order (edge types in the order
            of :data:`sheafsim.recording.EDGE_TYPES`, layers ascending, edges
            as written).

        Raises
        ------
        TableNotFoundError
            If the run has no readable ``edges.parquet``.
        InvalidValueError
            If ``by`` is not a grouping, ``step`` is not an integer, or the
            table has no row at ``step``.
        """
        _check_grouping(by)
        edges = self._edges()
        steps = edges["step"]
        if len(steps) == 0:
            raise RunReadError(
                f"edges.parquet of run {self.path} has no rows yet, so there is "
                "no discord to sum; wait for the run to write its first report"
            )
        if step is None:
            step = int(pc.max(steps).as_py())
        step = _check_step(step)
        at_step = edges.filter(pc.equal(steps, pa.scalar(step, pa.int64())))
        if at_step.num_rows == 0:
            first, last = pc.min_max(steps).values()
            raise InvalidValueError(
                f"edges.parquet of run {self.path} has no rows at step {step}; "
                f"it covers steps {first} to {last}, with rows every "
                "runtime.report_every steps (see its 'step' column)"
            )
        grouped = _group(at_step, by)
        return dict(
            zip(
                grouped["group"].to_pylist(),
                grouped["discord"].to_pylist(),
                strict=True,
            )
        )

    def discord_over_time(self, by: Grouping = "type") -> pa.Table:
        """Sum the edge discord of ``edges.parquet`` at every recorded step.

        Parameters
        ----------
        by : {"type", "layer", "edge"}
            Grouping as in :meth:`discord`.

        Returns
        -------
        pyarrow.Table
            Columns ``step`` (int64), ``group`` (string, or int64 for
            ``by="layer"``) and ``discord`` (float64), sorted by step and then
            by group in the order of :meth:`discord`.

        Raises
        ------
        TableNotFoundError
            If the run has no readable ``edges.parquet``.
        InvalidValueError
            If ``by`` is not a grouping.
        """
        _check_grouping(by)
        return _group(self._edges(), by)


def _check_grouping(by: str) -> None:
    if by not in _GROUPINGS:
        raise InvalidValueError(
            f"invalid grouping by={by!r}; use one of {', '.join(map(repr, _GROUPINGS))}"
        )


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer):
        raise InvalidValueError(
            f"step={step!r} is invalid; pass an integer step from the 'step' "
            "column of edges.parquet, or None for the last one"
        )
    return int(step)


def _group(edges: pa.Table, by: str) -> pa.Table:
    """Sum ``discord`` over ``by`` at every step of ``edges``, as in ``Run.discord``."""
    schema = pa.schema(
        [
            ("step", pa.int64()),
            ("group", pa.int64() if by == "layer" else pa.string()),
            ("discord", pa.float64()),
        ]
    )
    if by == "edge":
        # Keep the order in which the edges were written at their first step.
        names = edges["edge"].to_pylist()
        position = {name: i for i, name in enumerate(dict.fromkeys(names))}
        order = pa.array([position[name] for name in names], type=pa.int64())
        table = pa.table(
            [edges["step"], edges["edge"], edges["discord"], order],
            names=["step", "group", "discord", "order"],
        )
    else:
        column = "edge_type" if by == "type" else "layer"
        if by == "layer":
            edges = edges.filter(pc.is_valid(edges["layer"]))
        summed = edges.group_by(["step", column], use_threads=False).aggregate(
            [("discord", "sum")]
        )
        groups = summed[column]
        if by == "type":
            known = list(EDGE_TYPES)
            extra = sorted(set(groups.to_pylist()) - set(known))
            position = {name: i for i, name in enumerate(known + extra)}
            order = pa.array(
                [position[name] for name in groups.to_pylist()], type=pa.int64()
            )
        else:
            order = groups
        table = pa.table(
            [summed["step"], groups, summed["discord_sum"], order],
            names=["step", "group", "discord", "order"],
        )
    table = table.sort_by([("step", "ascending"), ("order", "ascending")])
    return table.drop_columns(["order"]).cast(schema)


def _require(package: str, method: str) -> Any:
    """Import ``package``, or raise an ImportError with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"Run.{method} needs {package}, which is not installed; install it "
            f"with 'pip install {package}', or use the pyarrow table run[name]"
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise RunReadError(f"{path} is unreadable: {error}") from None
    except json.JSONDecodeError as error:
        raise RunReadError(
            f"{path} is not valid JSON ({error}); the run that wrote it may have "
            "been stopped, or the file was changed by hand"
        ) from None
    if not isinstance(data, dict):
        raise RunReadError(
            f"{path} contains a JSON {type(data).__name__}, not an object; it "
            "was not written by sheafsim"
        )
    return data


def _read_run_table(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = read_table(path)
    except SheafsimError as error:
        raise RunReadError(str(error)) from None
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise RunReadError(
            f"Parquet table {path} lacks the columns {missing}, so it was not "
            f"written by this version of sheafsim; expected {schema.names}"
        )
    wrong = [
        f"{field.name} ({table.schema.field(field.name).type}, expected {field.type})"
        for field in schema
        if not table.schema.field(field.name).type.equals(field.type)
    ]
    if wrong:
        raise RunReadError(
            f"Parquet table {path} has columns of the wrong type: "
            f"{', '.join(wrong)}; it was not written by sheafsim, so rerun the "
            "run or remove the file"
        )
    return table


def _check_run_directory(path: Path, raw: str | os.PathLike[str]) -> None:
    if not path.exists():
        raise RunReadError(f"run directory {raw} not found; {_CONTENTS}")
    if not path.is_dir():
        raise RunReadError(f"{raw} is not a directory; {_CONTENTS}")
    if not any((path / name).exists() for name in JSON_FILES) and not existing_tables(
        path
    ):
        raise RunReadError(f"{raw} is not a run directory: {_CONTENTS}")


def load_run(path: str | os.PathLike[str], *, strict: bool = True) -> Run:
    """Read the run directory ``path``.

    Parameters
    ----------
    path : str or path-like
        A run directory, the ``--output`` of ``sheafsim run``. A run that is
        still going on, or was killed, is read as far as its files go.
    strict : bool
        If True, an unreadable file raises. If False, it is recorded in
        :attr:`Run.problems` and the other files still load.

    Returns
    -------
    Run

    Raises
    ------
    RunReadError
        If ``path`` does not exist, is not a directory or contains none of
        ``config.json``, ``summary.json`` and the tables. With ``strict=True``,
        also if a JSON file or a table is unreadable. The message names the
        file.
    """
    directory = Path(path)
    _check_run_directory(directory, path)
    problems: dict[str, str] = {}

    json_data: dict[str, dict[str, Any] | None] = {}
    for name in JSON_FILES:
        json_data[name] = None
        if not (directory / name).exists():
            continue
        try:
            json_data[name] = _read_json(directory / name)
        except RunReadError as error:
            if strict:
                raise
            problems[name] = str(error)

    tables: dict[str, pa.Table] = {}
    for name in existing_tables(directory):
        file_name = f"{name}.parquet"
        try:
            tables[name] = _read_run_table(directory / file_name, SCHEMAS[name])
        except RunReadError as error:
            if strict:
                raise
            problems[file_name] = str(error)

    return Run(
        directory,
        summary=json_data["summary.json"],
        config=json_data["config.json"],
        tables=tables,
        problems=problems,
    )
