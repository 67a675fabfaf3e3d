"""Edge discord, pinned discord and spectra of the neural sheaf."""

import numpy as np
import pytest
import reference_cases as ref

import sheafsim as ss
from sheafsim import diagnostics as dg
from sheafsim.errors import InvalidValueError

RNG = np.random.default_rng(3)
X = RNG.normal(size=(3, 12))


def test_forward_pass_has_zero_discord():
    net = ss.NeuralSheaf.random([3, 6, 5, 2], seed=1, output="softmax")
    report = dg.discord(net, X)
    assert report.total == 0.0
    assert set(report.per_edge) == {e.name for e in net.edges}
    assert report.by_type == {"affine": 0.0, "activation": 0.0, "output": 0.0}


@pytest.mark.parametrize("name", ["hard_pin_z1_2_4_1", "relu_deep_2_6_4_4_1"])
def test_discord_matches_reference_final_discord(name):
    case = ref.load(name)
    net = ref.network(case)
    x = np.array(case["x"])
    result = ss.diffuse(net, x, **ref.diffuse_kwargs(case))
    report = dg.discord(net, x, result)
    final = case["expected"]["final_discord"]
    for layer, value in final["weight_edges"].items():
        assert report.per_edge[f"affine{layer}"] == pytest.approx(
            value, rel=1e-8, abs=1e-14
        )
    for layer, value in final["activation_edges"].items():
        assert report.per_edge[f"activation{layer}"] == pytest.approx(
            value, rel=1e-8, abs=1e-14
        )
    assert report.total == pytest.approx(final["total"], rel=1e-8, abs=1e-14)


def test_discord_aggregates_and_energy():
    net = ss.NeuralSheaf.random([3, 6, 5, 2], seed=1, output="sigmoid")
    result = ss.diffuse(net, X, max_steps=40, record_every=40)
    report = dg.discord(net, X, result.state)
    assert report.total == pytest.approx(2 * result.trace["energy"][-1], rel=1e-12)
    assert report.by_layer[1] == pytest.approx(
        report.per_edge["affine1"] + report.per_edge["activation1"]
    )
    assert report.by_layer[3] == pytest.approx(
        report.per_edge["affine3"] + report.per_edge["output"]
    )
    assert sum(report.by_type.values()) == pytest.approx(report.total)
    per_sample = report.per_sample()
    for name, value in report.per_edge.items():
        assert per_sample[name].mean() == pytest.approx(value)
    table = report.table()
    assert table.column("edge").to_pylist() == [e.name for e in net.edges]


def test_coordinates_table():
    net = ss.NeuralSheaf.random([3, 6, 5, 1], seed=2)
    result = ss.diffuse(net, X, max_steps=20)
    report = dg.discord(net, X, result)
    table = report.coordinates()
    assert table.num_rows == sum(r.size for r in report.residuals.values())
    rows = table.to_pydict()
    residual = np.array(rows["residual"])
    gap = np.array(rows["upstream"]) - np.array(rows["downstream"])
    np.testing.assert_allclose(residual, gap, atol=1e-12)
    # Activation rows: upstream is R z, so it is z where active and 0 elsewhere.
    for i, edge in enumerate(rows["edge"]):
        if edge.startswith("activation"):
            expected = rows["z"][i] if rows["active"][i] else 0.0
            assert rows["upstream"][i] == pytest.approx(expected)
        if edge == "affine3":
            assert rows["active"][i] is None
    one = report.coordinates(["activation2"])
    assert set(one.column("edge").to_pylist()) == {"activation2"}
    with pytest.raises(InvalidValueError, match="unknown edges \\['affine9'\\]"):
        report.coordinates(["affine9"])


def test_discord_rejects_bad_state():
    net = ss.NeuralSheaf.random([3, 6, 1], seed=0)
    state = net.forward(X).state
    with pytest.raises(InvalidValueError, match="no stalk for vertex 'a1'"):
        dg.discord(net, X, {"z1": state["z1"], "z2": state["z2"]})
    bad = {v: state[v] for v in net.free_vertices}
    bad["z2"] = bad["z2"][:, :3]
    with pytest.raises(InvalidValueError, match="stalk of 'z2' has shape \\(1, 3\\)"):
        dg.discord(net, X, bad)
    with pytest.raises(InvalidValueError, match="got int"):
        dg.discord(net, X, 5)


def test_spectrum_reproduces_reference_case():
    case = ref.load("spectral_2_30_1")
    net = ref.network(case)
    x = np.array(case["x"])
    expected = case["expected"]
    for method in ("dense", "sparse"):
        report = dg.spectrum(net, x, method=method)
        assert report.method == method
        np.testing.assert_allclose(report.lambda_min, expected["lambda_min"], rtol=1e-9)
        np.testing.assert_allclose(report.lambda_max, expected["lambda_max"], rtol=1e-9)
    np.testing.assert_allclose(report.condition, report.lambda_max / report.lambda_min)


def test_spectrum_eigenvectors_and_shares():
    net = ss.NeuralSheaf.random([3, 8, 6, 2], seed=4, output="sigmoid")
    report = dg.spectrum(net, X[:, :5])
    assert report.blocks == ["z1", "a1", "z2", "a2", "z3", "y_out"]
    np.testing.assert_allclose(report.min_shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(report.max_shares.sum(axis=1), 1.0)
    for j in range(5):
        laplacian = ss.free_laplacian(net, X[:, j]).toarray()
        v = report.min_vectors[j]
        np.testing.assert_allclose(laplacian @ v, report.lambda_min[j] * v, atol=1e-10)
        w = report.max_vectors[j]
        np.testing.assert_allclose(laplacian @ w, report.lambda_max[j] * w, atol=1e-9)
    overlap = report.overlap("min")
    np.testing.assert_allclose(np.diag(overlap), 1.0)
    assert 0.0 <= report.stability("min") <= 1.0
    shares = report.block_shares("max")
    assert sum(shares.values()) == pytest.approx(1.0)
    summary = report.summary()
    assert summary["lambda_min_q25"] <= summary["lambda_min_median"]
    assert summary["lambda_min_median"] <= summary["lambda_min_q75"]
    # The free coboundary is unit lower triangular, so lambda_min <= 1 <= lambda_max.
    assert np.all(report.lambda_min <= 1 + 1e-12)
    assert np.all(report.lambda_max >= 1 - 1e-12)


def test_sparse_spectrum_matches_dense_on_wider_net():
    net = ss.NeuralSheaf.random([4, 40, 30, 3], seed=8)
    x = RNG.normal(size=(4, 3))
    dense = dg.spectrum(net, x, method="dense")
    sparse = dg.spectrum(net, x, method="sparse")
    np.testing.assert_allclose(sparse.lambda_min, dense.lambda_min, rtol=1e-8)
    np.testing.assert_allclose(sparse.lambda_max, dense.lambda_max, rtol=1e-8)
    np.testing.assert_allclose(sparse.min_shares, dense.min_shares, atol=1e-6)
    with pytest.raises(InvalidValueError, match="unknown method 'qr'"):
        dg.spectrum(net, x, method="qr")
    with pytest.raises(InvalidValueError, match="which='mid'"):
        dense.stability("mid")
    with pytest.raises(InvalidValueError, match="which='median'"):
        dense.block_shares("median")


def test_pinned_discord_identity_output():
    net = ss.NeuralSheaf.random([3, 6, 5, 1], seed=1)
    y = X[0] ** 2
    result = dg.pinned_discord(net, X, y)
    assert result.pinned_vertex == "z3"
    assert result.settled
    np.testing.assert_allclose(result.diffusion.state["z3"], y[None, :])
    # At the forward pass only the last affine edge carries the error.
    assert result.initial.per_edge["affine3"] > 0
    assert result.initial.total == pytest.approx(result.initial.per_edge["affine3"])
    # Diffusion spreads the tension upstream and lowers the energy.
    assert result.discord.total < result.initial.total
    assert result.discord.by_layer[1] > 0
    assert result.energy_trace["energy"][-1] < result.energy_trace["energy"][0]


def test_pinned_discord_softmax_uses_identity_output_mode():
    net = ss.NeuralSheaf.random([3, 6, 5, 2], seed=1, output="softmax")
    labels = np.arange(X.shape[1]) % 2
    result = dg.pinned_discord(net, X, labels, max_steps=3000)
    assert result.pinned_vertex == "y_out"
    np.testing.assert_allclose(result.labels.sum(axis=0), 1.0)
    np.testing.assert_allclose(result.diffusion.state["y_out"], result.labels)
    assert result.discord.by_type["output"] < result.initial.by_type["output"]


def test_pinned_discord_of_gradient_trained_and_sklearn_models():
    from sklearn.neural_network import MLPRegressor

    data = ss.load_dataset("paraboloid", seed=42)
    start = ss.NeuralSheaf.random([2, 8, 1], seed=0)
    trained = ss.train_gradient_descent(
        start, data.x_train, data.y_train, lr=0.005, epochs=200
    )
    from_result = dg.pinned_discord(trained, data.x_train[:, :50], data.y_train[:, :50])
    from_net = dg.pinned_discord(
        trained.net, data.x_train[:, :50], data.y_train[:, :50]
    )
    assert from_result.discord.per_edge == from_net.discord.per_edge
    model = MLPRegressor(hidden_layer_sizes=(8,), max_iter=2000, random_state=0)
    model.fit(data.x_train.T, data.y_train[0])
    result = dg.pinned_discord(model, data.x_train[:, :50], data.y_train[0, :50])
    assert result.discord.total > 0


def test_pinned_discord_bad_input():
    net = ss.NeuralSheaf.random([3, 6, 1], seed=0)
    with pytest.raises(InvalidValueError, match="cannot build a neural sheaf from str"):
        dg.pinned_discord("model.pt", X, X[0])
    with pytest.raises(InvalidValueError, match="unknown backend 'gpu'"):
        dg.pinned_discord(net, X, X[0], backend="gpu")
    with pytest.raises(InvalidValueError, match="apply only to backend='actors'"):
        dg.pinned_discord(net, X, X[0], schedule="async")
    with pytest.raises(InvalidValueError, match="check_every=0 is invalid"):
        dg.pinned_discord(net, X, X[0], check_every=0)
    with pytest.raises(InvalidValueError, match="energy_rtol=-1"):
        dg.pinned_discord(net, X, X[0], energy_rtol=-1)
    with pytest.raises(InvalidValueError, match="alpha=0 is invalid"):
        dg.pinned_discord(net, X, X[0], alpha=0)
    with pytest.raises(InvalidValueError, match="dt=-0.1 is invalid"):
        dg.pinned_discord(net, X, X[0], dt=-0.1)
    with pytest.raises(InvalidValueError, match=r"sets \['pins'\] itself"):
        dg.pinned_discord(net, X, X[0], backend="actors", pins=[])
    with pytest.raises(ss.StepSizeError, match="too large"):
        dg.pinned_discord(net, X, X[0], dt=100.0)
    unchecked = dg.pinned_discord(net, X, X[0], dt=100.0, check_step=False)
    assert unchecked.status in ("diverged", "non_finite")
    with pytest.raises(InvalidValueError, match="does not record tables"):
        dg.pinned_discord(net, X, X[0], backend="actors", record_dir="runs/p")
    with pytest.raises(InvalidValueError):
        dg.pinned_discord(net, X, X[0][:5])


@pytest.mark.usefixtures("local_ray")
def test_pinned_discord_on_actors_equals_in_process():
    net = ss.NeuralSheaf.random([3, 6, 5, 1], seed=1)
    y = X[0] ** 2
    options = {"dt": 0.05, "max_steps": 120, "energy_rtol": 0.0, "check_every": 40}
    local = dg.pinned_discord(net, X, y, **options)
    remote = dg.pinned_discord(net, X, y, backend="actors", report_every=40, **options)
    assert local.steps == remote.steps == 120
    assert local.status == remote.status == "max_steps"
    assert remote.energy_trace["step"] == [0, 40, 80, 120]
    np.testing.assert_allclose(
        remote.energy_trace["energy"], local.energy_trace["energy"], rtol=1e-10
    )
    for edge, value in local.discord.per_edge.items():
        assert remote.discord.per_edge[edge] == pytest.approx(value, rel=1e-10)
    assert remote.discord.by_layer[1] > 0


def test_training_tracks_spectra():
    data = ss.load_dataset("paraboloid", seed=42)
    net = ss.NeuralSheaf.random([2, 10, 1], seed=0)
    rows = []
    result = ss.train(
        net,
        data.x_train,
        data.y_train,
        epochs=2,
        steps_per_epoch=50,
        spectral_every=25,
        spectral_samples=16,
        on_spectrum=rows.append,
    )
    assert result.spectra["step"] == [0, 25, 50, 75, 100]
    assert result.spectra["samples"] == [16] * 5
    assert rows[-1]["step"] == 100
    first = dg.spectrum(net, data.x_train[:, :16]).summary()
    assert result.spectra["lambda_min_median"][0] == pytest.approx(
        first["lambda_min_median"]
    )
    last = dg.spectrum(result.net, data.x_train[:, :16]).summary()
    assert result.spectra["lambda_max_q75"][-1] == pytest.approx(last["lambda_max_q75"])
    with pytest.raises(InvalidValueError, match="spectral_every=-1 is invalid"):
        ss.train(net, data.x_train, data.y_train, epochs=1, spectral_every=-1)
    with pytest.raises(InvalidValueError, match="spectral_samples=0 is invalid"):
        ss.train(net, data.x_train, data.y_train, epochs=1, spectral_samples=0)


@pytest.mark.usefixtures("local_ray")
def test_actor_training_spectra_equal_in_process():
    from sheafsim.runtime import train_on_actors

    data = ss.load_dataset("paraboloid", seed=42)
    net = ss.NeuralSheaf.random([2, 6, 1], seed=0)
    options = {
        "epochs": 2,
        "steps_per_epoch": 20,
        "spectral_every": 20,
        "spectral_samples": 8,
    }
    local = ss.train(net, data.x_train, data.y_train, reset_each_epoch=False, **options)
    remote = train_on_actors(net, data.x_train, data.y_train, **options)
    assert remote.spectra["step"] == local.spectra["step"] == [0, 20, 40]
    for key in ss.training.SPECTRA_KEYS[3:]:
        np.testing.assert_allclose(remote.spectra[key], local.spectra[key], rtol=1e-10)
    with pytest.raises(InvalidValueError, match="spectral_every=30 is not a multiple"):
        train_on_actors(
            net,
            data.x_train,
            data.y_train,
            epochs=1,
            steps_per_epoch=20,
            spectral_every=30,
        )


def _assert_same_aggregates(run, report):
    for by, expected in (
        ("edge", report.per_edge),
        ("type", report.by_type),
        ("layer", report.by_layer),
    ):
        recorded = run.discord(by=by)
        assert set(recorded) == set(expected)
        for key, value in expected.items():
            assert recorded[key] == pytest.approx(value, rel=1e-9, abs=1e-15)


@pytest.mark.usefixtures("local_ray")
def test_recorded_discord_equals_diagnostics_on_actors(tmp_path):
    from sheafsim.runtime import diffuse_on_actors

    net = ss.NeuralSheaf.random([3, 6, 5, 2], seed=1, output="sigmoid")
    result = diffuse_on_actors(
        net, X, dt=0.05, max_steps=60, report_every=20, record_dir=tmp_path
    )
    run = ss.load_run(tmp_path)
    assert run["edges"].column("step").to_pylist()[-1] == result.steps == 60
    report = dg.discord(net, X, result)
    assert report.total > 0
    _assert_same_aggregates(run, report)


def test_recorded_discord_equals_diagnostics_in_process(tmp_path):
    from sheafsim.config import load_config
    from sheafsim.experiment import prepare, run_experiment

    path = tmp_path / "run.toml"
    path.write_text(
        "[network]\nsource = 'random'\nwidths = [3, 5, 4, 2]\noutput = 'softmax'\n"
        "seed = 1\n[data]\ndataset = 'random'\nsamples = 6\n"
        "[diffusion]\ndt = 0.05\nmax_steps = 40\n"
        "[runtime]\nbackend = 'inprocess'\nreport_every = 10\n"
    )
    config = load_config(path)
    run_experiment(config, tmp_path / "run")
    experiment = prepare(config)
    settings = config.diffusion
    result = ss.diffuse(
        experiment.net,
        experiment.x,
        dt=0.05,
        max_steps=40,
        init=settings.init,
        seed=settings.seed,
    )
    assert result.steps == 40
    run = ss.load_run(tmp_path / "run")
    _assert_same_aggregates(run, dg.discord(experiment.net, experiment.x, result))


def test_pinned_discord_settles_on_steady_oscillation():
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    features, labels = make_classification(n_samples=200, n_features=5, random_state=0)
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0)
    model.fit(features, labels)
    x = features[:50].T
    result = dg.pinned_discord(model, x, model.predict(features[:50]))
    assert result.status == "settled"
    assert result.steps < 20_000
    last, before = result.energy_trace["energy"][-1], result.energy_trace["energy"][-2]
    assert abs(last - before) <= dg.OSCILLATION_RTOL * last
