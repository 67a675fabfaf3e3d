import json
import math
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from run_configs import DIFFUSION as CONFIG

import sheafsim as ss
from sheafsim.cli import main
from sheafsim.errors import InvalidValueError
from sheafsim.recording import SCHEMAS, RunRecorder, TableWriter, read_table
from sheafsim.run import RunReadError, TableNotFoundError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An in-process diffusion run written by ``sheafsim run``."""
    root = tmp_path_factory.mktemp("load_run")
    config = root / "small.toml"
    config.write_text(CONFIG)
    out = root / "run"
    assert main(["run", str(config), "--output", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return ss.load_run(run_dir)


def edge_rows(step, pin_discord, scale=1.0):
    rows = [
        ("affine1", "affine", 1, 1.0),
        ("activation1", "activation", 1, 2.0),
        ("affine2", "affine", 2, 4.0),
        ("output", "output", 2, 8.0),
    ]
    result = [
        {
            "time_s": 0.0,
            "step": step,
            "edge": edge,
            "edge_type": kind,
            "layer": layer,
            "discord": value * scale,
        }
        for edge, kind, layer, value in rows
    ]
    result.append(
        {
            "time_s": 0.0,
            "step": step,
            "edge": "pin:a1",
            "edge_type": "pin",
            "layer": None,
            "discord": pin_discord,
        }
    )
    return result


@pytest.fixture(scope="module")
def pinned_run(tmp_path_factory):
    """A run directory whose edge table has soft-pin rows and a repeated step."""
    out = tmp_path_factory.mktemp("pinned")
    with RunRecorder(out, "pinned", tables=("edges",)) as recorder:
        recorder.edges(edge_rows(0, 16.0))
        recorder.edges(edge_rows(10, 32.0))
        # A second report of step 10, as an asynchronous run can write.
        recorder.edges(edge_rows(10, 64.0, scale=0.5))
    return ss.load_run(out)


def assert_same_table(table, expected):
    # Table.equals treats NaN as unequal to itself, and the first max_update
    # of an in-process run is NaN.
    assert table.schema == expected.schema
    for name in expected.column_names:
        np.testing.assert_array_equal(
            table[name].to_numpy(zero_copy_only=False),
            expected[name].to_numpy(zero_copy_only=False),
            err_msg=f"column {name}",
        )


def corrupt_copy(run_dir, tmp_path, file_name, content):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / file_name).write_bytes(content)
    return copy


def test_load_run_exported():
    assert ss.load_run.__module__ == "sheafsim.run"
    assert ss.Run.__name__ == "Run"


def test_tables_equal_read_table(run, run_dir):
    expected = [name for name in SCHEMAS if (run_dir / f"{name}.parquet").exists()]
    assert list(run.tables) == expected
    assert "convergence" in run.tables
    assert "edges" in run.tables
    for name, table in run.tables.items():
        assert_same_table(table, read_table(run_dir / f"{name}.parquet"))
        assert run[name] is table
        assert name in run
    assert run.problems == {}


def test_json_files_loaded(run, run_dir):
    assert run.summary == json.loads((run_dir / "summary.json").read_text())
    assert run.config == json.loads((run_dir / "config.json").read_text())
    assert run.summary["run_id"] == run.config["run_id"]
    assert run.path == run_dir
    assert "edges" in repr(run)


def test_discord_by_type_matches_pyarrow_sums(run):
    edges = run["edges"]
    last = pc.max(edges["step"]).as_py()
    at_last = edges.filter(pc.equal(edges["step"], last))
    by_type = run.discord("type")
    assert list(by_type) == ["affine", "activation", "output"]
    for kind, value in by_type.items():
        rows = at_last.filter(pc.equal(at_last["edge_type"], kind))
        assert value == pytest.approx(pc.sum(rows["discord"]).as_py(), rel=1e-12)


def test_discord_by_layer_matches_pyarrow_sums(run):
    edges = run["edges"]
    last = pc.max(edges["step"]).as_py()
    at_last = edges.filter(pc.equal(edges["step"], last))
    by_layer = run.discord("layer")
    assert list(by_layer) == [1, 2, 3]
    for layer, value in by_layer.items():
        rows = at_last.filter(pc.equal(at_last["layer"], layer))
        assert value == pytest.approx(pc.sum(rows["discord"]).as_py(), rel=1e-12)
    # The output edge belongs to the last layer, with affine3.
    by_edge = run.discord("edge")
    assert by_layer[3] == pytest.approx(by_edge["affine3"] + by_edge["output"])


def test_discord_by_edge_in_network_order(run):
    by_edge = run.discord("edge")
    assert list(by_edge) == [
        "affine1",
        "activation1",
        "affine2",
        "activation2",
        "affine3",
        "output",
    ]
    assert all(value >= 0 for value in by_edge.values())


@pytest.mark.parametrize("by", ["type", "layer", "edge"])
def test_discord_total_is_twice_energy(run, by):
    convergence = run["convergence"]
    for index in (0, convergence.num_rows // 2, convergence.num_rows - 1):
        step = convergence["step"][index].as_py()
        energy = convergence["energy"][index].as_py()
        total = sum(run.discord(by, step=step).values())
        assert total == pytest.approx(2 * energy, rel=1e-9)


def test_discord_defaults_to_last_step(run):
    last = run["convergence"]["step"][-1].as_py()
    assert run.discord("edge") == run.discord("edge", step=last)
    assert run.discord("edge", step=0) != run.discord("edge")


def test_discord_over_time_sums_to_twice_energy(run):
    over_time = run.discord_over_time("type")
    assert over_time.column_names == ["step", "group", "discord"]
    assert over_time.schema.field("step").type == pa.int64()
    assert over_time.schema.field("group").type == pa.string()
    totals = over_time.group_by("step").aggregate([("discord", "sum")])
    total_of = dict(
        zip(totals["step"].to_pylist(), totals["discord_sum"].to_pylist(), strict=True)
    )
    convergence = run["convergence"]
    assert sorted(total_of) == sorted(set(convergence["step"].to_pylist()))
    for step, energy in zip(
        convergence["step"].to_pylist(),
        convergence["energy"].to_pylist(),
        strict=True,
    ):
        assert total_of[step] == pytest.approx(2 * energy, rel=1e-9)


def test_discord_over_time_layer_groups(run):
    over_time = run.discord_over_time("layer")
    assert over_time.schema.field("group").type == pa.int64()
    steps = over_time["step"].to_pylist()
    assert steps == sorted(steps)
    first = over_time.filter(pc.equal(over_time["step"], 0))
    assert first["group"].to_pylist() == [1, 2, 3]
    assert first["discord"].to_pylist() == pytest.approx(
        list(run.discord("layer", step=0).values())
    )


def test_discord_over_time_edge_groups(run):
    over_time = run.discord_over_time("edge")
    last = over_time["step"][-1].as_py()
    rows = over_time.filter(pc.equal(over_time["step"], last))
    assert dict(
        zip(rows["group"].to_pylist(), rows["discord"].to_pylist(), strict=True)
    ) == run.discord("edge")


def test_discord_unknown_step(run):
    with pytest.raises(InvalidValueError, match="no rows at step 3; it covers steps 0"):
        run.discord("type", step=3)
    with pytest.raises(InvalidValueError, match="rows every runtime.report_every"):
        run.discord("type", step=3)


@pytest.mark.parametrize("step", ["10", True, 10.0, None])
def test_discord_step_must_be_integer(run, step):
    if step is None:
        assert run.discord("type", step=None) == run.discord("type")
        return
    with pytest.raises(InvalidValueError, match=f"step={step!r} is invalid"):
        run.discord("type", step=step)


def test_discord_invalid_grouping(run):
    with pytest.raises(InvalidValueError, match="invalid grouping by='vertex'"):
        run.discord("vertex")
    with pytest.raises(InvalidValueError, match="use one of 'type', 'layer', 'edge'"):
        run.discord_over_time("vertex")


def test_column_of_wrong_type_is_unreadable(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    table = pq.read_table(copy / "edges.parquet")
    index = table.schema.get_field_index("discord")
    table = table.set_column(index, "discord", table["discord"].cast(pa.string()))
    pq.write_table(table, copy / "edges.parquet")
    with pytest.raises(RunReadError, match="edges.parquet has columns of the wrong"):
        ss.load_run(copy)
    loose = ss.load_run(copy, strict=False)
    assert "discord (string, expected double)" in loose.problems["edges.parquet"]
    assert "convergence" in loose.tables


def test_pin_rows_grouped_by_type(pinned_run):
    # Step 10 was reported twice, and the second set (scale 0.5, pin 64) counts.
    assert pinned_run.discord("type") == {
        "affine": 0.5 + 2.0,
        "activation": 1.0,
        "output": 4.0,
        "pin": 64.0,
    }
    assert pinned_run.discord("type", step=0)["pin"] == 16.0


def test_pin_rows_left_out_of_layers(pinned_run):
    assert pinned_run.discord("layer") == {1: 0.5 + 1.0, 2: 2.0 + 4.0}
    assert pinned_run.discord("layer", step=0) == {1: 3.0, 2: 12.0}


def test_pin_rows_by_edge(pinned_run):
    by_edge = pinned_run.discord("edge")
    assert list(by_edge) == ["affine1", "activation1", "affine2", "output", "pin:a1"]
    assert by_edge["pin:a1"] == 64.0


def test_repeated_step_counted_once_over_time(pinned_run):
    over_time = pinned_run.discord_over_time("type")
    assert over_time.num_rows == 8
    at_ten = over_time.filter(pc.equal(over_time["step"], 10))
    assert at_ten["group"].to_pylist() == ["affine", "activation", "output", "pin"]
    assert at_ten["discord"].to_pylist() == [2.5, 1.0, 4.0, 64.0]


def test_discord_without_edges_table(tmp_path):
    RunRecorder(tmp_path, "r", tables=("convergence",)).close()
    run = ss.load_run(tmp_path)
    with pytest.raises(TableNotFoundError, match="edges.parquet is not in the run"):
        run.discord()


def test_discord_of_empty_edges_table(tmp_path):
    # A live run before its first report: the table has only its schema.
    writer = TableWriter(tmp_path / "edges.parquet", SCHEMAS["edges"])
    run = ss.load_run(tmp_path)
    assert run["edges"].num_rows == 0
    with pytest.raises(RunReadError, match="has no rows yet"):
        run.discord()
    writer.close()


def test_live_run_parts_are_read(tmp_path):
    recorder = RunRecorder(tmp_path, "live", tables=("convergence", "edges"))
    recorder.convergence(0, 2.0, 1.0)
    recorder.edges(edge_rows(0, 0.0))
    recorder.flush()
    try:
        assert (tmp_path / "convergence.parquet").is_dir()
        run = ss.load_run(tmp_path)
        assert run.summary is None
        assert run["convergence"]["energy"].to_pylist() == [2.0]
        assert run.discord("type")["output"] == 8.0
    finally:
        recorder.close()


def test_getitem_lists_tables_present(run):
    with pytest.raises(KeyError, match="Tables present: convergence, .*edges"):
        run["vertices"]
    with pytest.raises(TableNotFoundError, match="vertices.parquet is not in the run"):
        run["vertices"]


def test_getitem_unknown_table_name(run):
    with pytest.raises(TableNotFoundError, match="'energy' is not a table name"):
        run["energy"]


def test_to_pandas(run):
    pandas = pytest.importorskip("pandas")
    frame = run.to_pandas("edges")
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == run["edges"].column_names
    assert len(frame) == run["edges"].num_rows
    assert frame["discord"].sum() == pytest.approx(
        pc.sum(run["edges"]["discord"]).as_py()
    )


def test_to_polars(run):
    polars = pytest.importorskip("polars")
    frame = run.to_polars("convergence")
    assert isinstance(frame, polars.DataFrame)
    assert frame.columns == run["convergence"].column_names
    assert frame["energy"].to_list() == run["convergence"]["energy"].to_pylist()


@pytest.mark.parametrize(
    "package,method", [("pandas", "to_pandas"), ("polars", "to_polars")]
)
def test_missing_dataframe_package(run, monkeypatch, package, method):
    # A None entry in sys.modules makes the import fail as if not installed.
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=f"pip install {package}"):
        getattr(run, method)("edges")


def test_missing_path(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(RunReadError, match=f"run directory {path} not found"):
        ss.load_run(path)


def test_path_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(RunReadError, match=f"{path} is not a directory"):
        ss.load_run(path)


def test_empty_directory_is_not_a_run(tmp_path):
    with pytest.raises(RunReadError, match=f"{tmp_path} is not a run directory"):
        ss.load_run(tmp_path)


def test_unrelated_directory_is_not_a_run(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(
        RunReadError, match="contains config.json, summary.json or Parquet tables"
    ):
        ss.load_run(tmp_path)


def test_corrupt_table_strict(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "edges.parquet", b"not parquet" * 50)
    with pytest.raises(RunReadError, match=r"edges\.parquet is corrupt or unreadable"):
        ss.load_run(copy)


def test_corrupt_table_not_strict(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "edges.parquet", b"not parquet" * 50)
    run = ss.load_run(copy, strict=False)
    assert list(run.problems) == ["edges.parquet"]
    assert "corrupt or unreadable" in run.problems["edges.parquet"]
    assert "edges" not in run.tables
    assert_same_table(run["convergence"], read_table(run_dir / "convergence.parquet"))
    assert run.summary is not None
    with pytest.raises(TableNotFoundError, match="edges.parquet is unreadable"):
        run.discord()


def test_table_with_foreign_schema(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "convergence.parquet").unlink()
    pq.write_table(pa.table({"step": [0, 1]}), copy / "convergence.parquet")
    with pytest.raises(RunReadError, match="convergence.parquet lacks the columns"):
        ss.load_run(copy)
    run = ss.load_run(copy, strict=False)
    assert "convergence.parquet" in run.problems
    assert "edges" in run.tables


def test_corrupt_summary_strict(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "summary.json", b'{"status": ')
    with pytest.raises(RunReadError, match=r"summary\.json is not valid JSON"):
        ss.load_run(copy)


def test_corrupt_summary_not_strict(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "summary.json", b'{"status": ')
    run = ss.load_run(copy, strict=False)
    assert list(run.problems) == ["summary.json"]
    assert run.summary is None
    assert run.config is not None
    assert set(run.tables) >= {"convergence", "edges"}


def test_json_not_an_object(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "config.json", b"[1, 2]")
    with pytest.raises(RunReadError, match=r"config\.json contains a JSON list"):
        ss.load_run(copy)


def test_summary_not_utf8(run_dir, tmp_path):
    copy = corrupt_copy(run_dir, tmp_path, "summary.json", b"\xff\xfe\x00garbage")
    with pytest.raises(RunReadError, match=r"summary\.json is unreadable"):
        ss.load_run(copy)


def test_config_only_is_a_run(tmp_path):
    # A run that failed before its first step leaves config.json alone.
    (tmp_path / "config.json").write_text('{"run_id": "r1"}')
    run = ss.load_run(tmp_path)
    assert run.config == {"run_id": "r1"}
    assert run.summary is None
    assert run.tables == {}


def test_energy_matches_summary(run):
    final = run.summary["final_energy"]
    last = run["convergence"]["energy"][-1].as_py()
    assert math.isclose(final, last, rel_tol=1e-6, abs_tol=1e-20)
    assert np.isfinite(sum(run.discord("edge").values()))
