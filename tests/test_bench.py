"""Quick variants of the actor and backend benchmarks of ``sheafsim bench``.

Each test runs one benchmark with ``quick=True`` and checks the shape of its
table, not its speed. The actor benchmarks use the shared local Ray instance.
"""

from __future__ import annotations

import math

import pytest

from sheafsim.bench import BENCHMARKS, BenchResult

pytest.importorskip("sklearn")


def column(result: BenchResult, name: str) -> list[str]:
    index = result.columns.index(name)
    return [str(row[index]) for row in result.rows]


def assert_finite_positive(result: BenchResult, names: list[str]) -> None:
    for name in names:
        for cell in column(result, name):
            value = float(cell.removesuffix("x"))
            assert math.isfinite(value), f"{name} = {cell}"
            assert value > 0, f"{name} = {cell}"


@pytest.mark.usefixtures("local_ray")
def test_actor_round_quick():
    result = BENCHMARKS["actor_round"](True)
    assert result.name == "actor_round"
    assert result.columns == [
        "network",
        "columns",
        "steps",
        "Ray inline arguments up to",
        "in-process step (ms)",
        "actor round (ms)",
        "ratio",
        "ratio range",
        "target",
        "met",
        "max abs(actor - in-process)",
    ]
    assert len(result.rows) == 1
    assert_finite_positive(
        result, ["columns", "steps", "in-process step (ms)", "actor round (ms)"]
    )
    assert_finite_positive(result, ["ratio"])
    assert column(result, "met")[0] in ("yes", "no")
    # The synchronous schedule repeats the in-process arithmetic.
    assert float(column(result, "max abs(actor - in-process)")[0]) <= 1e-12
    assert any(note.startswith("CPU time per round") for note in result.notes)


@pytest.mark.usefixtures("local_ray")
def test_actor_messages_quick():
    result = BENCHMARKS["actor_messages"](True)
    assert result.name == "actor_messages"
    assert result.columns == [
        "loop",
        "actors",
        "messages per round",
        "message arrays (float64)",
        "rounds",
        "messages/s per actor",
        "ratio to bare loop",
        "target",
        "met",
    ]
    assert len(result.rows) == 3
    assert_finite_positive(
        result,
        ["actors", "messages per round", "rounds", "messages/s per actor"],
    )
    assert_finite_positive(result, ["ratio to bare loop"])
    # The digits sheaf has four stepping vertices and six messages per round.
    assert column(result, "actors") == ["4", "4", "4"]
    assert column(result, "messages per round") == ["6", "6", "6"]
    assert column(result, "met")[0] in ("yes", "no")


@pytest.mark.usefixtures("local_ray")
def test_async_slow_vertex_quick():
    result = BENCHMARKS["async_slow_vertex"](True)
    assert result.name == "async_slow_vertex"
    assert result.columns == [
        "schedule",
        "slow vertex",
        "status",
        "slow vertex steps",
        "max vertex steps",
        "time to tol (s)",
        "ms per slow-vertex step",
        "time against sync",
        "target",
        "met",
        "max abs(output - forward)",
    ]

    # The quick variant slows the middle vertex of the [4, 8, 1] network.
    assert column(result, "schedule") == ["sync", "async"]
    assert column(result, "slow vertex") == ["a1", "a1"]
    assert column(result, "status") == ["converged", "converged"]

    assert_finite_positive(
        result,
        [
            "slow vertex steps",
            "max vertex steps",
            "time to tol (s)",
            "ms per slow-vertex step",
            "time against sync",
            "max abs(output - forward)",
        ],
    )
    assert column(result, "met")[0] == "-"
    for met in column(result, "met")[1:]:
        assert met in ("yes", "no")

    # tol = 1e-4 leaves both outputs within 1e-2 of the forward pass.
    for error in column(result, "max abs(output - forward)"):
        assert float(error) < 1e-2


def test_torch_cpu_step_quick():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    result = BENCHMARKS["torch_cpu_step"](True)
    assert result.name == "torch_cpu_step"
    assert result.columns == [
        "library",
        "dtype",
        "heat step (ms)",
        "ratio to numpy float64",
        "ratio range",
        "max abs(output - numpy float64)",
    ]
    assert column(result, "library") == ["numpy", "numpy", "torch", "torch"]
    assert column(result, "dtype") == ["float64", "float32", "float64", "float32"]
    assert_finite_positive(result, ["heat step (ms)", "ratio to numpy float64"])
    assert column(result, "ratio to numpy float64")[0] == "1.00x"
    gaps = [float(cell) for cell in column(result, "max abs(output - numpy float64)")]
    assert gaps[0] == 0.0
    # torch float64 repeats numpy's arithmetic, and float32 differs by its
    # rounding only.
    assert gaps[2] <= 1e-12
    assert 0.0 < gaps[1] < 1e-3
    assert 0.0 < gaps[3] < 1e-3
    # The benchmark restores torch's thread count.
    assert torch.get_num_threads() == threads
