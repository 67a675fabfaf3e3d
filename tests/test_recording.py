import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sheafsim.errors import InvalidValueError
from sheafsim.recording import SCHEMAS, RunRecorder, TableWriter, read_table

STRING, INT, FLOAT = pa.string(), pa.int64(), pa.float64()

EXPECTED_COLUMNS = {
    "convergence": [
        ("run_id", STRING, False),
        ("time_s", FLOAT, False),
        ("step", INT, False),
        ("energy", FLOAT, False),
        ("max_update", FLOAT, False),
        ("error_vs_exact", FLOAT, True),
    ],
    "edges": [
        ("run_id", STRING, False),
        ("time_s", FLOAT, False),
        ("step", INT, False),
        ("edge", STRING, False),
        ("edge_type", STRING, False),
        ("layer", INT, True),
        ("discord", FLOAT, False),
    ],
    "vertices": [
        ("run_id", STRING, False),
        ("vertex", STRING, False),
        ("steps", INT, False),
        ("messages_sent", INT, False),
        ("messages_received", INT, False),
        ("max_staleness", INT, False),
    ],
    "training": [
        ("run_id", STRING, False),
        ("epoch", INT, False),
        ("step", INT, False),
        ("train_loss", FLOAT, True),
        ("test_loss", FLOAT, True),
        ("train_accuracy", FLOAT, True),
        ("test_accuracy", FLOAT, True),
    ],
    "baseline": [
        ("run_id", STRING, False),
        ("epoch", INT, False),
        ("step", INT, False),
        ("train_loss", FLOAT, True),
        ("test_loss", FLOAT, True),
        ("train_accuracy", FLOAT, True),
        ("test_accuracy", FLOAT, True),
    ],
    "crossings": [
        ("run_id", STRING, False),
        ("step", INT, False),
        ("layer", INT, False),
        ("crossings", INT, False),
    ],
    "staleness": [
        ("run_id", STRING, False),
        ("vertex", STRING, False),
        ("staleness", INT, False),
        ("steps", INT, False),
    ],
    "spectra": [
        ("run_id", STRING, False),
        ("epoch", INT, False),
        ("step", INT, False),
        ("samples", INT, False),
        ("lambda_min_median", FLOAT, False),
        ("lambda_min_q25", FLOAT, False),
        ("lambda_min_q75", FLOAT, False),
        ("lambda_max_median", FLOAT, False),
        ("lambda_max_q25", FLOAT, False),
        ("lambda_max_q75", FLOAT, False),
    ],
}


def vertex_row(i):
    return {
        "run_id": "r",
        "vertex": f"v{i}",
        "steps": i,
        "messages_sent": 2 * i,
        "messages_received": 3 * i,
        "max_staleness": 1,
    }


def vertex_writer(path, **kwargs):
    kwargs.setdefault("flush_rows", 1000)
    kwargs.setdefault("flush_seconds", math.inf)
    return TableWriter(path, SCHEMAS["vertices"], **kwargs)


@pytest.mark.parametrize("table", sorted(EXPECTED_COLUMNS))
def test_schema_names_types_order(table):
    schema = SCHEMAS[table]
    expected = EXPECTED_COLUMNS[table]
    assert schema.names == [name for name, _, _ in expected]
    assert [field.type for field in schema] == [type_ for _, type_, _ in expected]
    assert [field.nullable for field in schema] == [n for _, _, n in expected]


def test_schemas_cover_all_tables():
    assert set(SCHEMAS) == set(EXPECTED_COLUMNS)


def test_recorder_readable_mid_run_and_after(tmp_path):
    recorder = RunRecorder(tmp_path, "run-1", flush_seconds=math.inf)
    for step in range(1, 6):
        recorder.convergence(step, energy=1.0 / step, max_update=0.5 / step)
    recorder.convergence(6, energy=0.1, max_update=0.01, error_vs_exact=1e-3)
    recorder.edge(6, "x0-h1", "affine", discord=0.25, layer=1)
    recorder.edge(6, "general", "pin", discord=0.5)
    recorder.vertex(
        "h1", steps=6, messages_sent=12, messages_received=11, max_staleness=2
    )
    recorder.flush()

    path = tmp_path / "convergence.parquet"
    assert path.is_dir()
    mid_run = read_table(path)
    assert mid_run.num_rows == 6
    assert mid_run.schema.equals(SCHEMAS["convergence"])
    assert mid_run.column("error_vs_exact").null_count == 5
    assert mid_run.column("step").to_pylist() == [1, 2, 3, 4, 5, 6]
    # pyarrow alone reads the part directory too, because it skips hidden files.
    assert pq.read_table(path).num_rows == 6

    recorder.close()
    assert path.is_file()
    assert pq.ParquetFile(path).metadata.num_rows == 6
    after = read_table(path)
    assert after.equals(mid_run)
    edges = read_table(tmp_path / "edges.parquet")
    assert edges.column("layer").to_pylist() == [1, None]
    assert edges.column("run_id").to_pylist() == ["run-1", "run-1"]
    vertices = read_table(tmp_path / "vertices.parquet")
    assert vertices.to_pylist()[0]["messages_received"] == 11
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["convergence.parquet", "edges.parquet", "vertices.parquet"]


def test_time_s_measured_unless_given(tmp_path):
    with RunRecorder(tmp_path, "r", tables=["convergence"]) as recorder:
        recorder.convergence(1, energy=1.0, max_update=1.0)
        recorder.convergence(2, energy=1.0, max_update=1.0, time_s=42.0)
    times = read_table(tmp_path / "convergence.parquet").column("time_s").to_pylist()
    assert 0.0 <= times[0] < 60.0
    assert times[1] == 42.0


def test_empty_table_has_schema(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path)
    assert read_table(path).schema.equals(SCHEMAS["vertices"])
    writer.close()
    closed = read_table(path)
    assert closed.num_rows == 0
    assert closed.schema.equals(SCHEMAS["vertices"])


def test_flush_by_row_count(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path, flush_rows=np.int64(3))
    for i in range(7):
        writer.append(vertex_row(i))
    assert writer.rows_written == 6
    assert writer.rows_buffered == 1
    assert read_table(path).num_rows == 6
    writer.extend([vertex_row(7), vertex_row(8)])
    assert writer.rows_written == 9
    writer.close()
    assert read_table(path).column("vertex").to_pylist() == [f"v{i}" for i in range(9)]


def test_flush_by_time(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path, flush_seconds=0.2)
    writer.append(vertex_row(0))
    assert writer.rows_written == 0
    assert read_table(path).num_rows == 0
    time.sleep(0.3)
    writer.append(vertex_row(1))
    assert writer.rows_written == 2
    assert read_table(path).num_rows == 2
    writer.close()


KILLED_WRITER = textwrap.dedent(
    """
    import math, sys, time
    from sheafsim.recording import SCHEMAS, TableWriter

    writer = TableWriter(
        sys.argv[1], SCHEMAS["vertices"], flush_rows=4, flush_seconds=math.inf
    )
    for i in range(10):
        writer.append({
            "run_id": "r", "vertex": f"v{i}", "steps": i, "messages_sent": 0,
            "messages_received": 0, "max_staleness": 0,
        })
    print(writer.rows_written, writer.rows_buffered, flush=True)
    time.sleep(600)
    """
)


def test_killed_writer_keeps_flushed_rows(tmp_path):
    path = tmp_path / "vertices.parquet"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.split() == ["8", "2"]
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    table = read_table(path)
    assert table.column("vertex").to_pylist() == [f"v{i}" for i in range(8)]
    assert pq.read_table(path).num_rows == 8


def test_read_during_compaction_window(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path, compact=False)
    writer.extend([vertex_row(i) for i in range(3)])
    writer.close()
    assert path.is_dir()
    # Between the two renames of a compaction only the hidden part directory exists.
    path.rename(tmp_path / ".vertices.parquet.parts")
    assert read_table(path).num_rows == 3


def test_concurrent_reads_during_close(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path, flush_rows=1)
    writer.extend([vertex_row(i) for i in range(200)])
    row_counts = []
    errors = []
    done = threading.Event()

    def read_until_done():
        while not done.is_set():
            try:
                row_counts.append(read_table(path).num_rows)
            except InvalidValueError as error:
                errors.append(error)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    time.sleep(0.05)
    writer.close()
    done.set()
    reader.join()
    assert errors == []
    assert row_counts
    assert set(row_counts) == {200}


def test_unknown_column_raises(tmp_path):
    writer = vertex_writer(tmp_path / "vertices.parquet")
    with pytest.raises(InvalidValueError, match="unknown column 'color'.*vertices"):
        writer.append({**vertex_row(0), "color": "red"})
    assert writer.rows_buffered == 0


def test_missing_required_column_raises(tmp_path):
    writer = vertex_writer(tmp_path / "vertices.parquet")
    row = vertex_row(0)
    del row["steps"]
    with pytest.raises(InvalidValueError, match="missing required column 'steps'"):
        writer.append(row)
    with pytest.raises(InvalidValueError, match="table vertices"):
        writer.append({**vertex_row(1), "steps": None})


def test_bad_row_in_extend_buffers_nothing(tmp_path):
    writer = vertex_writer(tmp_path / "vertices.parquet")
    with pytest.raises(InvalidValueError, match="invalid value 'many'.*'steps'"):
        writer.extend([vertex_row(0), {**vertex_row(1), "steps": "many"}])
    assert writer.rows_buffered == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [("steps", 1.5), ("steps", True), ("steps", 2**63), ("vertex", 3)],
)
def test_wrong_value_type_raises(tmp_path, column, value):
    writer = vertex_writer(tmp_path / "vertices.parquet")
    with pytest.raises(InvalidValueError, match=f"invalid value.*'{column}'"):
        writer.append({**vertex_row(0), column: value})


def test_invalid_edge_type_raises(tmp_path):
    recorder = RunRecorder(tmp_path, "r", tables=["edges"])
    with pytest.raises(InvalidValueError, match="invalid edge_type 'bias'"):
        recorder.edge(1, "e", "bias", discord=0.0)


def test_table_not_open_raises(tmp_path):
    recorder = RunRecorder(tmp_path, "r", tables=["convergence"])
    with pytest.raises(InvalidValueError, match="table 'training' is not open"):
        recorder.training(epoch=0, step=1, train_loss=0.5)


def test_training_nullable_metrics(tmp_path):
    with RunRecorder(tmp_path, "r", tables=["training"]) as recorder:
        recorder.training(epoch=0, step=1, train_loss=0.5)
        recorder.training(0, 2, 0.4, 0.45, 0.8, 0.75)
    rows = read_table(tmp_path / "training.parquet").to_pylist()
    assert rows[0]["test_accuracy"] is None
    assert rows[1]["test_accuracy"] == 0.75


def test_unknown_table_name_raises(tmp_path):
    with pytest.raises(InvalidValueError, match="unknown table 'energies'"):
        RunRecorder(tmp_path, "r", tables=["energies"])


def test_existing_table_needs_overwrite(tmp_path):
    path = tmp_path / "vertices.parquet"
    with vertex_writer(path) as writer:
        writer.append(vertex_row(0))
    with pytest.raises(InvalidValueError, match="already exists.*overwrite=True"):
        vertex_writer(path)
    with vertex_writer(path, overwrite=True) as writer:
        writer.append(vertex_row(5))
    assert read_table(path).column("vertex").to_pylist() == ["v5"]


def test_truncated_file_read_raises(tmp_path):
    path = tmp_path / "vertices.parquet"
    with vertex_writer(path) as writer:
        writer.extend([vertex_row(i) for i in range(50)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidValueError, match="vertices.parquet is corrupt"):
        read_table(path)


def test_corrupt_part_read_raises(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path)
    (path / "part-000007.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidValueError, match="vertices.parquet is corrupt"):
        read_table(path)
    writer.flush()


def test_missing_file_read_raises(tmp_path):
    with pytest.raises(InvalidValueError, match="absent.parquet not found"):
        read_table(tmp_path / "absent.parquet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flush_rows": 0}, "flush_rows must be at least 1"),
        ({"flush_rows": 2.5}, "flush_rows must be an int"),
        ({"flush_seconds": 0.0}, "flush_seconds must be positive"),
        ({"flush_seconds": math.nan}, "flush_seconds must be positive"),
    ],
)
def test_invalid_flush_settings_raise(tmp_path, kwargs, message):
    with pytest.raises(InvalidValueError, match=message):
        vertex_writer(tmp_path / "vertices.parquet", **kwargs)


def test_close_idempotent(tmp_path):
    path = tmp_path / "vertices.parquet"
    writer = vertex_writer(path)
    writer.append(vertex_row(0))
    writer.close()
    writer.close()
    assert read_table(path).num_rows == 1
    with pytest.raises(InvalidValueError, match="is closed"):
        writer.append(vertex_row(1))


def test_recorder_context_manager_closes(tmp_path):
    with RunRecorder(tmp_path, "r", flush_seconds=math.inf) as recorder:
        recorder.convergence(1, energy=2.0, max_update=1.0)
    for name in ("convergence", "edges", "vertices"):
        assert (tmp_path / f"{name}.parquet").is_file()
    assert read_table(tmp_path / "convergence.parquet").num_rows == 1
    recorder.close()


def test_failed_flush_spares_other_tables(tmp_path):
    recorder = RunRecorder(tmp_path, "r", tables=["convergence", "vertices"])
    recorder.convergence(1, energy=2.0, max_update=1.0)
    recorder.vertex("v", steps=1, messages_sent=0, messages_received=0, max_staleness=0)
    recorder.flush()
    # Removing the part directory makes the next convergence flush fail.
    convergence = tmp_path / "convergence.parquet"
    for part in convergence.iterdir():
        part.unlink()
    convergence.rmdir()
    recorder.convergence(2, energy=1.0, max_update=0.5)
    with pytest.raises(OSError):
        recorder.close()
    assert recorder.writers["convergence"].rows_buffered == 1
    assert (tmp_path / "vertices.parquet").is_file()
    assert read_table(tmp_path / "vertices.parquet").num_rows == 1


def test_recorder_inside_async_ray_actor(tmp_path, local_ray):
    import ray

    @ray.remote
    class Recording:
        def __init__(self, directory):
            self.recorder = RunRecorder(directory, "ray-run", flush_rows=2)

        async def report(self, step):
            self.recorder.convergence(step, energy=1.0, max_update=0.1)

        async def close(self):
            self.recorder.close()

    actor = Recording.remote(str(tmp_path))
    ray.get([actor.report.remote(step) for step in range(5)])
    assert read_table(tmp_path / "convergence.parquet").num_rows == 4
    ray.get(actor.close.remote())
    assert read_table(tmp_path / "convergence.parquet").num_rows == 5
