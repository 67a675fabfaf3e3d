"""Quick variants of the training benchmarks of ``sheafsim bench``."""

import math

import pytest

from sheafsim.bench import BENCHMARKS


def numbers(result, name):
    index = result.columns.index(name)
    return [float(str(row[index]).removesuffix("x")) for row in result.rows]


def test_train_step_quick():
    result = BENCHMARKS["train_step"](True)
    assert [row[0] for row in result.rows] == ["[2, 30, 1]", "[64, 128, 128, 10]"]
    for name in ("forward pass (us)", "training step (us)", "ratio to forward"):
        assert all(math.isfinite(v) and v > 0 for v in numbers(result, name))


def test_train_recipe_quick():
    result = BENCHMARKS["train_recipe"](True)
    assert [row[0] for row in result.rows] == ["sheaf dynamics", "gradient descent"]
    assert numbers(result, "steps") == [2000, 2000]
    assert all(v > 0 for v in numbers(result, "train MSE"))


@pytest.mark.usefixtures("local_ray")
def test_actor_train_round_quick():
    result = BENCHMARKS["actor_train_round"](True)
    (row,) = result.rows
    # Synchronous actor training equals in-process training.
    assert float(row[-1]) <= 1e-10
    assert numbers(result, "ratio")[0] > 0
