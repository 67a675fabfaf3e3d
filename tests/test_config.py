import pytest

import sheafsim as ss
from sheafsim.config import load_config


def write(tmp_path, text):
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_digits_example_loads():
    config = load_config("examples/digits.toml")
    assert config.network.source == "sklearn"
    assert config.data.samples == "all"
    assert config.diffusion.dt == "auto"
    assert config.runtime.backend == "actors"


def test_defaults_fill_missing_tables(tmp_path):
    config = load_config(write(tmp_path, "[diffusion]\ntol = 1e-6\n"))
    assert config.diffusion.tol == 1e-6
    assert config.diffusion.integrator == "euler"


def test_overrides_apply(tmp_path):
    path = write(tmp_path, "[data]\nsamples = 10\n")
    config = load_config(path, {"data.samples": 20, "runtime.backend": "inprocess"})
    assert config.data.samples == 20
    assert config.runtime.backend == "inprocess"


def test_unknown_key_named_with_file(tmp_path):
    path = write(tmp_path, "[diffusion]\nstep = 0.1\n")
    with pytest.raises(
        ss.ConfigError, match=r"unknown key diffusion.step in .*experiment.toml"
    ):
        load_config(path)


def test_unknown_table(tmp_path):
    path = write(tmp_path, "[solver]\nname = 'x'\n")
    with pytest.raises(ss.ConfigError, match=r"unknown table \[solver\]"):
        load_config(path)


def test_wrong_type_named(tmp_path):
    path = write(tmp_path, "[diffusion]\ntol = 'small'\n")
    with pytest.raises(ss.ConfigError, match="diffusion.tol in .* must be a number"):
        load_config(path)


def test_bool_is_not_int(tmp_path):
    path = write(tmp_path, "[diffusion]\nmax_steps = true\n")
    with pytest.raises(
        ss.ConfigError, match="diffusion.max_steps .* must be an integer"
    ):
        load_config(path)


def test_bad_choice(tmp_path):
    path = write(tmp_path, "[diffusion]\nintegrator = 'rk4'\n")
    with pytest.raises(
        ss.ConfigError, match=r"diffusion.integrator .* is 'rk4'; choose"
    ):
        load_config(path)


def test_nonpositive_dt(tmp_path):
    path = write(tmp_path, "[diffusion]\ndt = -0.1\n")
    with pytest.raises(ss.ConfigError, match="dt in .* is -0.1; it must be a positive"):
        load_config(path)


def test_bad_samples(tmp_path):
    path = write(tmp_path, "[data]\nsamples = 'some'\n")
    with pytest.raises(ss.ConfigError, match="data.samples .* is 'some'"):
        load_config(path)


def test_bad_hidden_layers(tmp_path):
    path = write(tmp_path, "[network]\nhidden_layers = [64, 0]\n")
    with pytest.raises(ss.ConfigError, match="list of positive integers"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ss.ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[diffusion\n")
    with pytest.raises(ss.ConfigError, match="is not valid TOML"):
        load_config(path)


def test_table_that_is_a_value(tmp_path):
    path = write(tmp_path, "data = 5\n")
    with pytest.raises(ss.ConfigError, match=r"\[data\] in .* must be a table"):
        load_config(path, {"data.samples": 3})


def test_override_blamed_on_command_line(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ss.ConfigError, match=r"diffusion.seed \(set on the command"):
        load_config(path, {"diffusion.seed": -1})


def test_override_unknown_table(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ss.ConfigError, match="--set solver.x names no"):
        load_config(path, {"solver.x": 1})


def test_max_iter_must_be_positive(tmp_path):
    path = write(tmp_path, "[network]\nmax_iter = 0\n")
    with pytest.raises(ss.ConfigError, match="network.max_iter .* must be >= 1"):
        load_config(path)


def test_heavy_ball_rejected_on_actors(tmp_path):
    path = write(tmp_path, "[diffusion]\nintegrator = 'heavy_ball'\n")
    with pytest.raises(ss.ConfigError, match="does not run on vertex actors"):
        load_config(path)


def test_heavy_ball_allowed_in_process(tmp_path):
    path = write(
        tmp_path,
        "[diffusion]\nintegrator = 'heavy_ball'\n[runtime]\nbackend = 'inprocess'\n",
    )
    assert load_config(path).diffusion.integrator == "heavy_ball"


def test_too_many_samples(tmp_path):
    path = write(tmp_path, "[data]\nsamples = 5000\n")
    with pytest.raises(ss.ConfigError, match="exceeds the 1797 samples"):
        load_config(path)


def test_async_runtime_and_delays_parse(tmp_path):
    path = write(
        tmp_path,
        '[runtime]\nschedule = "async"\nstaleness_bound = 2\nconvergence_window = 20\n'
        "[delays]\ncompute_s = 0.001\nmessage_s = 0.002\njitter = 0.0\n"
        "slowdown = { a1 = 5 }\nseed = 3\n"
        "[output]\noverwrite = true\n",
    )
    config = load_config(path)
    assert config.runtime.schedule == "async"
    assert config.runtime.staleness_bound == 2
    assert config.runtime.convergence_window == 20
    assert config.delays.slowdown == {"a1": 5.0}
    assert config.delays.active
    assert config.output.overwrite is True
    assert config.to_dict()["delays"]["seed"] == 3


def test_staleness_bound_defaults_to_none(tmp_path):
    config = load_config(write(tmp_path, '[runtime]\nschedule = "async"\n'))
    assert config.runtime.staleness_bound is None
    assert config.runtime.convergence_window is None
    assert not config.delays.active


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "[runtime]\nstaleness_bound = 2\n",
            r"runtime.staleness_bound = 2 in .* applies only to runtime.schedule",
        ),
        (
            '[runtime]\nschedule = "async"\nstaleness_bound = -1\n',
            r"runtime.staleness_bound in .* is -1; it must be >= 0",
        ),
        (
            '[runtime]\nschedule = "async"\nconvergence_window = 0\n',
            r"runtime.convergence_window in .* is 0; it must be >= 1",
        ),
        (
            '[runtime]\nbackend = "inprocess"\nschedule = "async"\n',
            r"runtime.schedule = 'async' in .* needs vertex actors",
        ),
        (
            '[runtime]\nbackend = "inprocess"\n[delays]\ncompute_s = 0.1\n',
            r"\[delays\] in .* injects delays into vertex actors",
        ),
        ("[delays]\njitter = 2.0\n", r"delays.jitter in .* is 2.0; it must be in"),
        ("[delays]\ncompute_s = -1\n", r"delays.compute_s in .* is -1.0"),
        (
            '[delays]\nslowdown = { a1 = "fast" }\n',
            r"delays.slowdown in .*\.a1 must be a number",
        ),
        ("[delays]\nslowdown = { a1 = 0 }\n", r"factors > 0 \(slowdown.a1\)"),
        ("[delays]\nslowdown = 5\n", r"delays.slowdown in .* must be a table"),
        ("[delays]\nlatency = 5\n", r"unknown key delays.latency"),
        ('[output]\noverwrite = "yes"\n', r"output.overwrite in .* must be true or"),
        ('[runtime]\nschedule = "gossip"\n', r"choose one of \['sync', 'async'\]"),
    ],
)
def test_runtime_config_errors(tmp_path, text, match):
    with pytest.raises(ss.ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_arrays_table_defaults(tmp_path):
    from sheafsim.backend import ArrayBackend

    config = load_config(write(tmp_path, "[diffusion]\ntol = 1e-6\n"))
    assert config.arrays.gpus_per_actor is None
    assert config.arrays.array_backend() == ArrayBackend("numpy", "cpu", "float64")
    assert config.to_dict()["arrays"] == {
        "backend": "numpy",
        "device": "cpu",
        "dtype": "float64",
        "gpus_per_actor": None,
    }


def test_arrays_table_parses(tmp_path):
    pytest.importorskip("torch")
    from sheafsim.backend import ArrayBackend

    text = (
        "[runtime]\nbackend = 'inprocess'\n"
        "[arrays]\nbackend = 'torch'\ndevice = 'cuda:1'\ndtype = 'float32'\n"
    )
    config = load_config(write(tmp_path, text))
    # A CUDA device is checked when the run starts, not when the file is read.
    assert config.arrays.array_backend() == ArrayBackend("torch", "cuda:1", "float32")
    assert config.arrays.gpus_per_actor is None
    shared = load_config(
        write(
            tmp_path,
            "[arrays]\nbackend = 'torch'\ndevice = 'cuda'\ngpus_per_actor = 1\n",
        )
    )
    assert shared.arrays.gpus_per_actor == 1.0
    assert isinstance(shared.arrays.gpus_per_actor, float)


def test_cuda_index_rejected_on_actors(tmp_path):
    pytest.importorskip("torch")
    text = "[arrays]\nbackend = 'torch'\ndevice = 'cuda:1'\n"
    with pytest.raises(ss.ConfigError, match="set arrays.device = 'cuda'"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "backend = 'jax'",
            r"arrays.backend in .*experiment.toml is 'jax'; choose one of "
            r"\['numpy', 'torch'\]",
        ),
        ("dtype = 'float16'", r"arrays.dtype in .* is 'float16'; choose one of"),
        ("dtype = 64", r"arrays.dtype in .* must be a string, got int 64"),
        (
            "device = 'tpu'",
            r"arrays.device in .*experiment.toml is 'tpu'; it must be 'cpu', "
            r"'cuda' or 'cuda:N'",
        ),
        ("backend = 'torch'\ndevice = 'cuda:a'", r"arrays.device .* is 'cuda:a'"),
        (
            "device = 'cuda'",
            r"arrays.device in .* is 'cuda'; it must be 'cpu' with arrays.backend "
            r"= 'numpy'",
        ),
        (
            "backend = 'torch'\ndevice = 'cuda'\ngpus_per_actor = 0",
            r"arrays.gpus_per_actor in .* is 0.0; it must be in \(0, 1\]",
        ),
        (
            "backend = 'torch'\ndevice = 'cuda'\ngpus_per_actor = 1.5",
            r"arrays.gpus_per_actor .* is 1.5; it must be in \(0, 1\]",
        ),
        (
            "gpus_per_actor = 'half'",
            r"arrays.gpus_per_actor .* must be a number, got str 'half'",
        ),
        (
            "backend = 'torch'\ngpus_per_actor = 0.5",
            r"arrays.gpus_per_actor in .*experiment.toml reserves GPUs for vertex "
            r"actors, so it needs arrays.device = 'cuda'",
        ),
        ("precision = 'float32'", r"unknown key arrays.precision in .*experiment"),
    ],
)
def test_arrays_config_errors(tmp_path, text, match):
    pytest.importorskip("torch")
    with pytest.raises(ss.ConfigError, match=match):
        load_config(write(tmp_path, f"[arrays]\n{text}\n"))


def test_gpus_per_actor_needs_actors(tmp_path):
    pytest.importorskip("torch")
    text = (
        "[runtime]\nbackend = 'inprocess'\n"
        "[arrays]\nbackend = 'torch'\ndevice = 'cuda'\ngpus_per_actor = 0.25\n"
    )
    with pytest.raises(
        ss.ConfigError,
        match=r"arrays.gpus_per_actor in .*experiment.toml reserves GPUs for "
        "vertex actors",
    ):
        load_config(write(tmp_path, text))


def test_arrays_override_blamed_on_command_line(tmp_path):
    path = write(tmp_path, "[arrays]\nbackend = 'numpy'\n")
    with pytest.raises(
        ss.ConfigError, match=r"arrays.dtype \(set on the command line\) is 'half'"
    ):
        load_config(path, {"arrays.dtype": "half"})


RANDOM_NETWORK = """
[network]
source = "random"
widths = [4, 16, 3]
output = "softmax"

[data]
dataset = "random"
samples = 40

[diffusion]
integrator = "nesterov"
tol = 1e-5

[runtime]
backend = "inprocess"
"""


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ("", "numpy/cpu/float64"),
        ("backend = 'torch'\ndtype = 'float32'", "torch/cpu/float32"),
        ("dtype = 'float32'", "numpy/cpu/float32"),
    ],
)
def test_run_in_process_on_array_backend(tmp_path, capsys, arrays, expected):
    import json

    import numpy as np

    from sheafsim.cli import main

    pytest.importorskip("torch")
    path = write(tmp_path, RANDOM_NETWORK + f"\n[arrays]\n{arrays}\n")
    out = tmp_path / "run"
    assert main(["run", str(path), "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["array_backend"] == expected
    assert summary["status"] == "converged"
    assert summary["max_abs_error_vs_forward"] < 1e-3
    assert json.loads(capsys.readouterr().out)["array_backend"] == expected
    outputs = np.load(out / "outputs.npy")
    assert outputs.shape == (3, 40)
    config = json.loads((out / "config.json").read_text())
    assert str(config["arrays"]["dtype"]) in expected


def test_run_on_missing_cuda_exits_with_2(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from sheafsim.cli import main

    path = write(tmp_path, RANDOM_NETWORK)
    command = ["run", str(path), "--output", str(tmp_path / "run"), "--quiet"]
    command += ["--set", "arrays.backend=torch", "--set", "arrays.device=cuda"]
    assert main(command) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_training_run_on_torch(tmp_path):
    import json

    import numpy as np

    from sheafsim.cli import main

    pytest.importorskip("torch")
    out = tmp_path / "train"
    command = ["run", "examples/paraboloid_train.toml", "--output", str(out)]
    command += ["--quiet", "--set", "runtime.backend=inprocess"]
    command += ["--set", "training.epochs=2", "--set", "training.steps_per_epoch=50"]
    command += ["--set", "training.baseline_lr=0", "--set", "arrays.backend=torch"]
    assert main(command) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["array_backend"] == "torch/cpu/float64"
    assert summary["status"] == "completed"
    assert isinstance(summary["train_loss"], float)
    with np.load(out / "weights.npz") as archive:
        assert archive["W1"].shape == (30, 2)
        assert archive["W1"].dtype == np.float64


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_run_on_actors_on_torch(tmp_path):
    import json

    from sheafsim.cli import main

    pytest.importorskip("torch")
    path = write(tmp_path, RANDOM_NETWORK)
    out = tmp_path / "run"
    command = ["run", str(path), "--output", str(out), "--quiet"]
    command += ["--set", "runtime.backend=actors", "--set", "arrays.backend=torch"]
    command += ["--set", "arrays.dtype=float32"]
    assert main(command) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["array_backend"] == "torch/cpu/float32"
    assert summary["status"] == "converged"
    assert summary["max_abs_error_vs_forward"] < 1e-3
