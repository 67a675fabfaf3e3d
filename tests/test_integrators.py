import numpy as np
import pytest
import reference_cases as ref

import sheafsim as ss


def test_nesterov_ten_times_fewer_steps_on_deep_case():
    case = ref.load("relu_deep_2_6_4_4_1")
    net = ref.network(case)
    x = np.array(case["x"])
    kwargs = ref.diffuse_kwargs(case)
    euler = ss.diffuse(net, x, **kwargs)
    fast = ss.diffuse(net, x, integrator="nesterov", **kwargs)
    assert euler.converged
    assert fast.converged
    assert fast.steps * 10 <= euler.steps
    forward = net.forward(x).output
    np.testing.assert_allclose(fast.output, forward, atol=1e-6)
    np.testing.assert_allclose(fast.output, euler.output, atol=1e-6)


@pytest.mark.parametrize("integrator", ["nesterov", "heavy_ball"])
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_momentum_reaches_forward_pass(integrator, output):
    net = ss.NeuralSheaf.random([3, 12, 8, 4], seed=11, output=output)
    x = np.random.default_rng(3).normal(size=(3, 25))
    result = ss.diffuse(net, x, dt=0.05, tol=1e-11, integrator=integrator)
    assert result.converged
    np.testing.assert_allclose(result.output, net.forward(x).output, atol=1e-7)


def test_momentum_respects_hard_pins():
    case = ref.load("hard_pin_z1_2_4_1")
    net = ref.network(case)
    x = np.array(case["x"])
    kwargs = ref.diffuse_kwargs(case)
    euler = ss.diffuse(net, x, **kwargs)
    fast = ss.diffuse(net, x, integrator="nesterov", **kwargs)
    assert fast.steps < euler.steps
    np.testing.assert_allclose(fast.output, euler.output, atol=1e-8)


def test_heavy_ball_momentum_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="momentum=1.5 is invalid"):
        ss.diffuse(net, np.ones((2, 1)), integrator="heavy_ball", momentum=1.5)


def test_nesterov_step_limit_is_stricter():
    net = ss.NeuralSheaf.random([2, 8, 8, 1], seed=0)
    x = np.ones((2, 3))
    from sheafsim.stepsize import estimate_lambda_max

    values = [v for v in ss.initial_state(net, x, "random", 0).values()]
    lam = float(estimate_lambda_max(net, values).max())
    dt = 1.5 / lam
    ss.diffuse(net, x, dt=dt, max_steps=5)
    with pytest.raises(ss.StepSizeError, match="nesterov"):
        ss.diffuse(net, x, dt=dt, max_steps=5, integrator="nesterov")
