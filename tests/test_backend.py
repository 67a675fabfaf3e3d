import numpy as np
import pytest
import reference_cases as ref

import sheafsim as ss

torch = pytest.importorskip("torch")


def as_torch(kwargs):
    converted = dict(kwargs)
    converted["state"] = {v: torch.as_tensor(a) for v, a in kwargs["state"].items()}
    return converted


@pytest.mark.parametrize("name", ref.names("inference"))
def test_torch_cpu_matches_numpy_on_reference(name):
    case = ref.load(name)
    net = ref.network(case)
    x = np.array(case["x"])
    kwargs = ref.diffuse_kwargs(case)
    expected = ss.diffuse(net, x, **kwargs)
    tnet = net.to(None, dtype=torch.float64)
    result = ss.diffuse(tnet, torch.as_tensor(x), **as_torch(kwargs))
    assert result.steps == expected.steps
    assert isinstance(result.output, torch.Tensor)
    for vertex in net.free_vertices:
        np.testing.assert_allclose(
            result.state[vertex].numpy(), expected.state[vertex], atol=1e-12
        )


def test_torch_nesterov_and_crossings():
    net = ss.NeuralSheaf.random([3, 8, 5, 2], seed=1, output="softmax")
    x = np.random.default_rng(0).normal(size=(3, 6))
    tnet = net.to(None, dtype=torch.float64)
    for integrator in ("euler", "nesterov"):
        a = ss.diffuse(net, x, dt=0.05, tol=1e-10, integrator=integrator)
        b = ss.diffuse(
            tnet, torch.as_tensor(x), dt=0.05, tol=1e-10, integrator=integrator
        )
        assert a.steps == b.steps
        np.testing.assert_array_equal(a.crossings, b.crossings)
        np.testing.assert_allclose(b.output.numpy(), a.output, atol=1e-12)
