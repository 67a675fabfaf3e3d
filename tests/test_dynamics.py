import numpy as np
import pytest
import reference_cases as ref

import sheafsim as ss

INFERENCE = ref.names("inference")


@pytest.fixture(scope="module", params=INFERENCE)
def replay(request):
    case = ref.load(request.param)
    net = ref.network(case)
    steps = [int(s) for s in case["expected"]["total_discord_at_step"]]
    result = ss.diffuse(
        net, np.array(case["x"]), record_at=steps, **ref.diffuse_kwargs(case)
    )
    return case, result


def test_reference_iterations(replay):
    case, result = replay
    assert result.status == "converged"
    assert abs(result.steps - case["expected"]["iterations"]) <= 1


def test_reference_output(replay):
    case, result = replay
    np.testing.assert_allclose(result.output, case["expected"]["output"], rtol=1e-9)


def test_reference_discord_trajectory(replay):
    case, result = replay
    for step, expected in case["expected"]["total_discord_at_step"].items():
        position = result.trace["step"].index(int(step))
        assert result.trace["discord"][position] == pytest.approx(expected, rel=1e-9)


def test_reference_final_discord(replay):
    case, result = replay
    final = case["expected"]["final_discord"]
    expected = {f"affine{k}": v for k, v in final["weight_edges"].items()}
    expected.update({f"activation{k}": v for k, v in final["activation_edges"].items()})
    if final["output_edge"] is not None:
        expected["output"] = final["output_edge"]
    # Residuals near 1e-20 are rounding noise, hence the absolute floor.
    for edge, value in expected.items():
        assert result.trace[edge][-1] == pytest.approx(value, rel=1e-9, abs=1e-15)
    assert result.trace["discord"][-1] == pytest.approx(final["total"], abs=1e-15)


def test_forward_pass_is_fixed_point():
    net = ss.NeuralSheaf.random([3, 8, 5, 2], seed=1)
    x = np.random.default_rng(0).normal(size=(3, 20))
    result = ss.diffuse(net, x, init="forward_pass", tol=1e-12)
    assert result.status == "converged"
    assert result.steps == 5
    np.testing.assert_allclose(result.output, net.forward(x).output, atol=1e-14)


@pytest.mark.parametrize("init", ["random", "zeros"])
def test_diffusion_reaches_forward_pass(init):
    net = ss.NeuralSheaf.random([4, 10, 3], seed=2, output="softmax")
    x = np.random.default_rng(1).normal(size=(4, 16))
    result = ss.diffuse(net, x, init=init, dt=0.05, tol=1e-11)
    assert result.converged
    np.testing.assert_allclose(result.output, net.forward(x).output, atol=1e-8)


def test_soft_pin_scales_downstream():
    # With zero biases, soft-pinning all of z1 to 0 scales z1 and everything
    # downstream by 1 / (1 + gamma).
    net = ss.NeuralSheaf.random([3, 6, 4, 2], seed=3)
    x = np.random.default_rng(2).normal(size=(3, 5))
    gamma = 3.0
    pin = ss.SoftPin("z1", value=0.0, gamma=gamma)
    result = ss.diffuse(net, x, dt=0.05, tol=1e-13, soft_pins=[pin], max_steps=200_000)
    assert result.converged
    forward = net.forward(x)
    for vertex in ("z1", "a1", "z2", "a2", "z3"):
        np.testing.assert_allclose(
            result.state[vertex], forward[vertex] / (1 + gamma), atol=1e-9
        )


def test_hard_pin_per_sample_values():
    net = ss.NeuralSheaf.random([2, 5, 1], seed=4)
    x = np.random.default_rng(3).normal(size=(2, 4))
    target = np.array([[0.1, 0.2, 0.3, 0.4]])
    pin = ss.HardPin("z1", coords=[2], value=target)
    result = ss.diffuse(net, x, dt=0.05, tol=1e-12, pins=[pin])
    np.testing.assert_array_equal(result.state["z1"][2], target[0])


def test_hard_pin_on_output_pulls_upstream():
    net = ss.NeuralSheaf.random([2, 5, 1], seed=5)
    x = np.random.default_rng(4).normal(size=(2, 3))
    pin = ss.HardPin("z2", value=np.array([[1.0, -1.0, 0.5]]))
    result = ss.diffuse(net, x, init="forward_pass", dt=0.05, tol=1e-12, pins=[pin])
    assert result.converged
    moved = np.abs(result.state["a1"] - net.forward(x)["a1"]).max()
    assert moved > 1e-3
    assert result.trace["discord"][-1] > 1e-6


def test_soft_pin_on_hard_pinned_coordinate_warns():
    net = ss.NeuralSheaf.random([2, 3, 1], seed=0)
    x = np.ones((2, 1))
    with pytest.warns(UserWarning, match="is ignored there because"):
        ss.diffuse(
            net,
            x,
            pins=[ss.HardPin("z1", coords=[0], value=0.0)],
            soft_pins=[ss.SoftPin("z1", coords=[0, 1], value=1.0, gamma=2.0)],
            max_steps=10,
        )


def test_crossings_recorded():
    net = ss.NeuralSheaf.random([2, 8, 1], seed=6)
    x = np.random.default_rng(5).normal(size=(2, 6))
    result = ss.diffuse(net, x, dt=0.05, tol=1e-10, seed=1)
    assert result.crossings.shape[1] == 4
    assert len(result.crossings) > 0
    final_mask = result.state["z1"] >= 0
    initial = ss.initial_state(net, x, "random", seed=1)["z1"] >= 0
    # Each neuron and sample that ends on another side than it started crossed
    # an odd number of times.
    for neuron, sample in zip(*np.nonzero(final_mask != initial), strict=True):
        rows = result.crossings[
            (result.crossings[:, 2] == neuron) & (result.crossings[:, 3] == sample)
        ]
        assert len(rows) % 2 == 1


def test_record_every():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    result = ss.diffuse(net, np.ones((2, 2)), record_every=7, max_steps=30)
    assert result.trace["step"] == [0, 7, 14, 21, 28, 30]
    energy = np.array(result.trace["energy"])
    assert np.all(np.diff(energy) <= 0)


def test_max_steps_status():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    result = ss.diffuse(net, np.ones((2, 2)), max_steps=3)
    assert result.status == "max_steps"
    assert result.steps == 3


def test_raise_on_failure():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.ConvergenceError, match="max_steps=3") as info:
        ss.diffuse(net, np.ones((2, 2)), max_steps=3, raise_on_failure=True)
    assert info.value.status == "max_steps"


def test_large_step_diverges_without_check():
    net = ss.NeuralSheaf.random([2, 8, 8, 1], seed=0)
    result = ss.diffuse(net, np.ones((2, 3)), dt=2.0, check_step=False)
    assert result.status in ("diverged", "non_finite")
    assert result.steps < 1000


def test_step_size_check_proposes_dt():
    net = ss.NeuralSheaf.random([2, 8, 8, 1], seed=0)
    with pytest.raises(ss.StepSizeError, match=r"Use dt <= [0-9.e-]+"):
        ss.diffuse(net, np.ones((2, 3)), dt=2.0)


def test_proposed_dt_is_stable():
    net = ss.NeuralSheaf.random([2, 8, 8, 1], seed=0)
    x = np.ones((2, 3))
    with pytest.raises(ss.StepSizeError) as info:
        ss.diffuse(net, x, dt=2.0)
    proposed = float(str(info.value).split("Use dt <= ")[1].split(",")[0])
    result = ss.diffuse(net, x, dt=proposed, tol=1e-10, max_steps=200_000)
    assert result.converged


def test_lambda_max_estimate_matches_dense():
    from sheafsim.certificates import free_laplacian

    net = ss.NeuralSheaf.random([3, 7, 5, 2], seed=7)
    x = np.random.default_rng(6).normal(size=(3, 4))
    fp = net.forward(x)
    values = [fp[v] for v in net.free_vertices]
    from sheafsim.stepsize import estimate_lambda_max

    estimate = estimate_lambda_max(net, values, iterations=300)
    for column in range(4):
        dense = free_laplacian(net, x[:, column]).toarray()
        exact = np.linalg.eigvalsh(dense)[-1]
        assert estimate[column] == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("name", ["dt", "alpha", "tol"])
def test_nonpositive_parameter_rejected(name):
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match=f"{name}=-1.0 is invalid"):
        ss.diffuse(net, np.ones((2, 1)), **{name: -1.0})


def test_pin_coordinate_out_of_range():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(
        ss.ShapeError, match="coordinate 4 but the stalk has dimension 4"
    ):
        ss.diffuse(net, np.ones((2, 1)), pins=[ss.HardPin("z1", coords=[4])])


def test_pin_on_unknown_vertex():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="cannot pin vertex 'x'"):
        ss.diffuse(net, np.ones((2, 1)), pins=[ss.HardPin("x")])


def test_pin_value_shape_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    pin = ss.HardPin("z1", coords=[0, 1], value=np.ones(3))
    with pytest.raises(ss.ShapeError, match=r"pin value on 'z1' has shape \(3,\)"):
        ss.diffuse(net, np.ones((2, 2)), pins=[pin])


def test_soft_pin_gamma_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="gamma=0.0"):
        ss.diffuse(net, np.ones((2, 1)), soft_pins=[ss.SoftPin("z1", gamma=0.0)])


def test_unknown_integrator_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="unknown integrator 'rk4'"):
        ss.diffuse(net, np.ones((2, 1)), integrator="rk4")


def test_unknown_init_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="unknown init 'ones'"):
        ss.diffuse(net, np.ones((2, 1)), init="ones")


def test_initial_state_shape_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    state = ss.initial_state(net, np.ones((2, 3)), "zeros")
    state["a1"] = np.zeros((4, 2))
    with pytest.raises(
        ss.ShapeError, match=r"initial state of 'a1' has shape \(4, 2\)"
    ):
        ss.diffuse(net, np.ones((2, 3)), state=state)


def test_unknown_output_mode_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0, output="sigmoid")
    with pytest.raises(ss.InvalidValueError, match="unknown output_mode 'exact'"):
        ss.diffuse(net, np.ones((2, 1)), output_mode="exact")


def test_overflow_ends_non_finite():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    x = np.ones((2, 2))
    state = {v: np.full((net.stalk_dim(v), 2), 1e308) for v in net.free_vertices}
    with np.errstate(over="ignore", invalid="ignore"):
        result = ss.diffuse(net, x, state=state, check_step=False)
    assert result.status == "non_finite"
    assert result.steps == 1


def test_zero_columns_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.ShapeError, match="input x has 0 columns"):
        ss.diffuse(net, np.ones((2, 0)))


def test_scalar_input_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.ShapeError, match="input x is a scalar"):
        net.forward(1.0)


def test_text_input_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="cannot be read as a real array"):
        net.forward([["a"], ["b"]])


def test_complex_input_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="complex values"):
        net.forward(np.ones((2, 1), dtype=complex))


@pytest.mark.parametrize("seed", [-1, "a", 1.5])
def test_bad_seed_rejected(seed):
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="seed=.* is invalid"):
        ss.diffuse(net, np.ones((2, 1)), seed=seed)


def test_single_pin_object_accepted():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    result = ss.diffuse(
        net, np.ones((2, 1)), pins=ss.HardPin("z1", coords=[0], value=0.5), max_steps=3
    )
    assert result.state["z1"][0, 0] == 0.5


def test_float_pin_coordinates_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="coordinates must be integers"):
        ss.diffuse(net, np.ones((2, 1)), pins=[ss.HardPin("z1", coords=[1.5])])


def test_conflicting_hard_pins_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    pins = [ss.HardPin("z1", coords=[0, 1], value=0.0), ss.HardPin("z1", coords=[1])]
    with pytest.raises(ss.InvalidValueError, match=r"both pin coordinates \[1\]"):
        ss.diffuse(net, np.ones((2, 1)), pins=pins)


def test_text_pin_value_rejected():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match="give a number or an array"):
        ss.diffuse(net, np.ones((2, 1)), pins=[ss.HardPin("z1", value="a")])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_steps": 1.5}, "max_steps=1.5 is invalid"),
        ({"max_steps": 0}, "max_steps=0 and min_steps=5 are invalid"),
        ({"dt": "0.1"}, "dt='0.1' is invalid"),
        ({"record_at": [-5]}, "record_at contains -5"),
        ({"init": "zeros", "state": {}}, "both init='zeros' and state"),
    ],
)
def test_invalid_run_settings(kwargs, match):
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    with pytest.raises(ss.InvalidValueError, match=match):
        ss.diffuse(net, np.ones((2, 1)), **kwargs)


def test_soft_pin_stiffness_in_step_check():
    net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    pin = ss.SoftPin("a1", value=0.0, gamma=1e6)
    with pytest.raises(ss.StepSizeError, match="weaker soft pins"):
        ss.diffuse(net, np.ones((2, 1)), soft_pins=[pin])
