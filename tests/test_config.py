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
