"""TOML experiment configurations for ``sheafsim run``.

A configuration has up to eight tables; every key is optional::

    [network]                # where the network comes from
    source = "sklearn"       # "sklearn" (fit on a data set), "random" or "npz"
    dataset = "digits"       # sklearn: data set to fit on
    hidden_layers = [64]     # sklearn: hidden_layer_sizes
    max_iter = 500           # sklearn: training iterations
    widths = [2, 30, 1]      # random: layer widths
    output = "identity"      # random: output activation
    path = "weights.npz"     # npz: W1, b1, W2, b2, ... and optionally output
    seed = 0

    [data]
    dataset = "digits"       # "digits" or "random"
    samples = "all"          # "all" or a number of samples (the first ones)

    [diffusion]
    init = "random"          # "random", "zeros" or "forward_pass"
    seed = 0
    alpha = 1.0
    dt = "auto"              # a number, or "auto" for 90% of the stable step
    tol = 1e-9
    min_steps = 5
    max_steps = 100000
    integrator = "euler"     # "euler", "nesterov" or "heavy_ball"
    output_mode = "jacobian"

    [runtime]
    backend = "actors"       # "actors" (Ray vertex actors) or "inprocess"
    schedule = "sync"        # "sync" or "async" (actors only)
    report_every = 10        # steps between two metric rows
    address = ""             # "" starts a local Ray; "auto" or "ray://host:port"
    num_cpus = 0             # local Ray only; 0 lets Ray use the whole machine
    staleness_bound = 2      # async only; leave out for no bound
    convergence_window = 10  # async only; default max(report_every, 10)

    [delays]                 # injected delays (actors only)
    compute_s = 0.0          # mean extra seconds per step of each vertex
    message_s = 0.0          # mean latency of each message
    jitter = 0.5             # relative spread of the draws, in [0, 1]
    slowdown = { a1 = 5.0 }  # factor on compute_s per vertex
    seed = 0

    [arrays]                 # where stalks and maps live (ArrayBackend)
    backend = "numpy"        # "numpy" or "torch"
    device = "cpu"           # "cpu", or with torch "cuda" or "cuda:N"
    dtype = "float64"        # "float64" or "float32"
    gpus_per_actor = 0.25    # actors on "cuda" only: the share of one GPU
                             # that each vertex actor reserves, in (0, 1];
                             # default 1 / n for n stepping vertex actors

    [training]               # present: train the network instead of diffusing
    dataset = "paraboloid"   # paraboloid, saddle, circular, blobs or digits
    seed = 42                # data set seed
    epochs = 100
    steps_per_epoch = 1000
    alpha = 1.0
    beta = "auto"            # a number, or "auto" for 1 / n_train
    dt = "auto"              # a number, or "auto": 0.005 (one hidden layer), 0.01
    reset_each_epoch = "auto"  # true, false, or "auto": true for classification
    log_every = 0            # also evaluate every log_every steps (in process)
    baseline_lr = 0.0        # > 0 also runs epochs * steps_per_epoch steps of
                             # full-batch gradient descent with this rate
    spectral_every = 0       # > 0: lambda_min/max of the free Laplacian every
                             # this many steps (spectra.parquet)
    spectral_samples = 32    # training inputs used for the spectra

    [output]
    directory = "runs/digits"
    overwrite = false        # replace a run already in the directory

A training run uses ``[network]`` with ``source = "random"`` (He initialisation
from ``widths`` and ``seed``) or ``"npz"``, ``[runtime]`` for the backend and
schedule, and ignores ``[data]`` and ``[diffusion]``.

Unknown tables or keys and values of the wrong type raise
:class:`~sheafsim.errors.ConfigError` naming the key and the file.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sheafsim.backend import BACKENDS, DTYPES, ArrayBackend
from sheafsim.errors import ConfigError, InvalidValueError

__all__ = [
    "ExperimentConfig",
    "NetworkConfig",
    "DataConfig",
    "DiffusionConfig",
    "RuntimeConfig",
    "DelaysConfig",
    "ArraysConfig",
    "OutputConfig",
    "load_config",
]


@dataclass(frozen=True)
class NetworkConfig:
    """Source of the network: a fitted scikit-learn model, random weights or npz."""

    source: str = "sklearn"
    dataset: str = "digits"
    hidden_layers: list[int] = field(default_factory=lambda: [64])
    max_iter: int = 500
    widths: list[int] = field(default_factory=lambda: [2, 30, 1])
    output: str = "identity"
    path: str = ""
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Inputs to diffuse."""

    dataset: str = "digits"
    samples: int | str = "all"
    seed: int = 0


@dataclass(frozen=True)
class DiffusionConfig:
    """Settings of the heat equation; see :func:`sheafsim.diffuse`."""

    init: str = "random"
    seed: int = 0
    alpha: float = 1.0
    dt: float | str = "auto"
    tol: float = 1e-9
    min_steps: int = 5
    max_steps: int = 100_000
    integrator: str = "euler"
    output_mode: str = "jacobian"


@dataclass(frozen=True)
class RuntimeConfig:
    """Runtime settings: backend, schedule, reporting and Ray address."""

    backend: str = "actors"
    schedule: str = "sync"
    report_every: int = 10
    address: str = ""
    num_cpus: int = 0
    staleness_bound: int | None = None
    convergence_window: int | None = None


@dataclass(frozen=True)
class DelaysConfig:
    """Seeded delays injected into an actor run; see ``DelayModel``."""

    compute_s: float = 0.0
    message_s: float = 0.0
    jitter: float = 0.5
    slowdown: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    @property
    def active(self) -> bool:
        """Whether any delay is injected."""
        return self.compute_s > 0 or self.message_s > 0


@dataclass(frozen=True)
class ArraysConfig:
    """Array library, device and precision of a run; see :class:`ArrayBackend`."""

    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float64"
    gpus_per_actor: float | None = None

    def array_backend(self) -> ArrayBackend:
        """Return the :class:`~sheafsim.backend.ArrayBackend` of this table."""
        return ArrayBackend(self.backend, self.device, self.dtype)


@dataclass(frozen=True)
class TrainingConfig:
    """Training by sheaf dynamics; see :func:`sheafsim.train`."""

    dataset: str = "paraboloid"
    seed: int = 42
    epochs: int = 100
    steps_per_epoch: int = 1000
    alpha: float = 1.0
    beta: float | str = "auto"
    dt: float | str = "auto"
    reset_each_epoch: bool | str = "auto"
    log_every: int = 0
    baseline_lr: float = 0.0
    spectral_every: int = 0
    spectral_samples: int = 32


@dataclass(frozen=True)
class OutputConfig:
    """Location of the run directory."""

    directory: str = "runs/run"
    overwrite: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment, as read from a TOML file."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    delays: DelaysConfig = field(default_factory=DelaysConfig)
    arrays: ArraysConfig = field(default_factory=ArraysConfig)
    training: TrainingConfig | None = None
    output: OutputConfig = field(default_factory=OutputConfig)
    source_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved configuration as plain data."""
        return asdict(self)


_TABLES = {
    "network": NetworkConfig,
    "data": DataConfig,
    "diffusion": DiffusionConfig,
    "runtime": RuntimeConfig,
    "delays": DelaysConfig,
    "arrays": ArraysConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
}

_CHOICES = {
    ("network", "source"): ("sklearn", "random", "npz"),
    ("network", "dataset"): ("digits",),
    ("network", "output"): ("identity", "sigmoid", "softmax"),
    ("data", "dataset"): ("digits", "random"),
    ("diffusion", "init"): ("random", "zeros", "forward_pass"),
    ("diffusion", "integrator"): ("euler", "nesterov", "heavy_ball"),
    ("diffusion", "output_mode"): ("jacobian", "identity"),
    ("runtime", "backend"): ("actors", "inprocess"),
    ("runtime", "schedule"): ("sync", "async"),
    ("arrays", "backend"): BACKENDS,
    ("arrays", "dtype"): DTYPES,
    ("training", "dataset"): ("paraboloid", "saddle", "circular", "blobs", "digits"),
}


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "list[int]": "a list of positive integers",
    "int | str": "an integer or a string",
    "float | str": "a number or a string",
    "int | None": "an integer",
    "float | None": "a number",
    "bool": "true or false",
    "dict[str, float]": "a table of vertex names to numbers",
    "bool | str": 'true, false or "auto"',
}


def _check_type(value: Any, annotation: str, where: str) -> Any:
    """Check ``value`` against a field annotation written as a string."""
    allowed = {
        "int": (int,),
        "float": (int, float),
        "str": (str,),
        "list[int]": (list,),
        "int | str": (int, str),
        "float | str": (int, float, str),
        "int | None": (int,),
        "float | None": (int, float),
        "bool": (bool,),
        "dict[str, float]": (dict,),
        "bool | str": (bool, str),
    }[annotation]
    if annotation == "bool | str":
        if value not in (True, False, "auto"):
            raise ConfigError(f'{where} must be true, false or "auto", got {value!r}')
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(
                f"{where} must be true or false, got {type(value).__name__} {value!r}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ConfigError(
            f"{where} must be {_TYPE_WORDS[annotation]}, got {type(value).__name__} "
            f"{value!r}"
        )
    if isinstance(value, list) and not all(
        isinstance(item, int) and not isinstance(item, bool) and item > 0
        for item in value
    ):
        raise ConfigError(f"{where} must be a list of positive integers, got {value!r}")
    if isinstance(value, dict):
        bad = [
            key
            for key, item in value.items()
            if isinstance(item, bool) or not isinstance(item, int | float)
        ]
        if bad:
            raise ConfigError(
                f"{where}.{bad[0]} must be a number, got {value[bad[0]]!r}"
            )
        return {key: float(item) for key, item in value.items()}
    if annotation in ("float", "float | None") and isinstance(value, int | float):
        return float(value)
    return value


def _build_table(
    name: str, raw: Any, path: str, overridden: frozenset[str] = frozenset()
) -> Any:
    cls = _TABLES[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] in {path} must be a table, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if f"{name}.{key}" in overridden:
            where = f"{name}.{key} (set on the command line)"
        else:
            where = f"{name}.{key} in {path}"
        if key not in known:
            raise ConfigError(
                f"unknown key {name}.{key} in {path}; valid keys of [{name}] are "
                f"{sorted(known)}"
            )
        value = _check_type(value, str(known[key].type), where)
        choices = _CHOICES.get((name, key))
        if choices is not None and value not in choices:
            raise ConfigError(f"{where} is {value!r}; choose one of {list(choices)}")
        values[key] = value
    table = cls(**values)
    _check_values(name, table, path, overridden)
    return table


# Integrators that the vertex actors implement.
_ACTOR_INTEGRATORS = ("euler", "nesterov")
_DATASET_SIZES = {"digits": 1797}


def _check_combination(tables: dict[str, Any], path: str) -> None:
    diffusion, runtime, data = tables["diffusion"], tables["runtime"], tables["data"]
    if runtime.backend == "actors" and diffusion.integrator not in _ACTOR_INTEGRATORS:
        raise ConfigError(
            f"diffusion.integrator {diffusion.integrator!r} in {path} does not run on "
            f"vertex actors; use one of {list(_ACTOR_INTEGRATORS)} or set "
            "runtime.backend = 'inprocess'"
        )
    for key in ("staleness_bound", "convergence_window"):
        value = getattr(runtime, key)
        if value is not None and (
            runtime.backend != "actors" or runtime.schedule != "async"
        ):
            raise ConfigError(
                f"runtime.{key} = {value} in {path} applies only to runtime.schedule "
                "= 'async' with runtime.backend = 'actors'; remove it or change "
                "the schedule"
            )
    if runtime.backend == "inprocess" and runtime.schedule != "sync":
        raise ConfigError(
            f"runtime.schedule = {runtime.schedule!r} in {path} needs vertex actors; "
            "set runtime.backend = 'actors' or runtime.schedule = 'sync'"
        )
    if tables["delays"].active and runtime.backend != "actors":
        raise ConfigError(
            f"[delays] in {path} injects delays into vertex actors; set "
            "runtime.backend = 'actors' or remove the table"
        )
    _check_arrays(tables["arrays"], runtime, path)
    training = tables["training"]
    if training is not None:
        network = tables["network"]
        if network.source == "sklearn":
            raise ConfigError(
                f"[training] in {path} trains a network from scratch; set "
                "network.source = 'random' (with widths) or 'npz'"
            )
        if runtime.backend == "actors" and training.reset_each_epoch is True:
            raise ConfigError(
                f"training.reset_each_epoch = true in {path} is not supported on "
                "vertex actors, which train with a warm start; set it to false or "
                "runtime.backend = 'inprocess'"
            )
        if (
            runtime.backend == "actors"
            and training.spectral_every % training.steps_per_epoch
        ):
            raise ConfigError(
                f"training.spectral_every = {training.spectral_every} in {path} is "
                f"not a multiple of steps_per_epoch = {training.steps_per_epoch}; "
                "on actors the spectra are computed at epoch ends"
            )
        if runtime.backend == "actors" and training.log_every:
            raise ConfigError(
                f"training.log_every in {path} applies in process only; on actors "
                "the losses are recorded once per epoch. Remove it or set "
                "runtime.backend = 'inprocess'"
            )
    size = _DATASET_SIZES.get(data.dataset)
    if size is not None and isinstance(data.samples, int) and data.samples > size:
        raise ConfigError(
            f"data.samples = {data.samples} in {path} exceeds the {size} samples of "
            f"the {data.dataset!r} data set; use at most {size} or 'all'"
        )


def _check_arrays(arrays: ArraysConfig, runtime: RuntimeConfig, path: str) -> None:
    """Reject devices and GPU shares that the chosen runtime cannot use."""
    device = arrays.device
    if (
        runtime.backend == "actors"
        and device.startswith("cuda:")
        and device != "cuda:0"
    ):
        raise ConfigError(
            f"arrays.device = {device!r} in {path} cannot be used with vertex "
            "actors: Ray gives each actor its own GPU, which it sees as 'cuda'; "
            "set arrays.device = 'cuda'"
        )
    if arrays.gpus_per_actor is None:
        return
    needs = []
    if runtime.backend != "actors":
        needs.append("runtime.backend = 'actors'")
    if not device.startswith("cuda"):
        needs.append("arrays.device = 'cuda'")
    if needs:
        raise ConfigError(
            f"arrays.gpus_per_actor in {path} reserves GPUs for vertex actors, so "
            f"it needs {' and '.join(needs)} (the device is {device!r}); set "
            f"{' and '.join(needs)}, or remove arrays.gpus_per_actor"
        )


# "cpu", "cuda" or "cuda:N".
_DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")


def _check_values(
    name: str, table: Any, path: str, overridden: frozenset[str] = frozenset()
) -> None:
    def fail(key: str, rule: str) -> None:
        if f"{name}.{key}" in overridden:
            where = f"{name}.{key} (set on the command line)"
        else:
            where = f"{name}.{key} in {path}"
        raise ConfigError(f"{where} is {getattr(table, key)!r}; it must be {rule}")

    if name == "diffusion":
        for key in ("alpha", "tol"):
            if not getattr(table, key) > 0:
                fail(key, "positive")
        if isinstance(table.dt, str):
            if table.dt != "auto":
                fail("dt", 'a positive number or "auto"')
        elif not (math.isfinite(table.dt) and table.dt > 0):
            fail("dt", 'a positive number or "auto"')
        if table.max_steps < 1:
            fail("max_steps", ">= 1")
        if table.min_steps < 0:
            fail("min_steps", ">= 0")
    if name == "data" and isinstance(table.samples, str) and table.samples != "all":
        fail("samples", '"all" or a positive integer')
    if name == "data" and isinstance(table.samples, int) and table.samples < 1:
        fail("samples", '"all" or a positive integer')
    if name == "runtime" and table.report_every < 1:
        fail("report_every", ">= 1")
    if name == "runtime" and table.num_cpus < 0:
        fail("num_cpus", ">= 0")
    if name == "runtime" and table.staleness_bound is not None:
        if table.staleness_bound < 0:
            fail("staleness_bound", ">= 0 (leave it out for no bound)")
    if name == "runtime" and table.convergence_window is not None:
        if table.convergence_window < 1:
            fail("convergence_window", ">= 1")
    if name == "training":
        for key in ("beta", "dt"):
            value = getattr(table, key)
            if (isinstance(value, str) and value != "auto") or (
                not isinstance(value, str) and not value > 0
            ):
                fail(key, 'a positive number or "auto"')
        for key in ("epochs", "steps_per_epoch"):
            if getattr(table, key) < 1:
                fail(key, ">= 1")
        if not table.alpha > 0:
            fail("alpha", "positive")
        if table.log_every < 0:
            fail("log_every", ">= 0")
        if table.baseline_lr < 0:
            fail("baseline_lr", ">= 0 (0 skips the baseline)")
        if table.spectral_every < 0:
            fail("spectral_every", ">= 0 (0 turns the spectra off)")
        if table.spectral_samples < 1:
            fail("spectral_samples", ">= 1")
    if name == "delays":
        for key in ("compute_s", "message_s"):
            value = getattr(table, key)
            if not (math.isfinite(value) and value >= 0):
                fail(key, "a finite number of seconds >= 0")
        if not 0 <= table.jitter <= 1:
            fail("jitter", "in [0, 1]")
        for vertex, factor in table.slowdown.items():
            if not (math.isfinite(factor) and factor > 0):
                fail("slowdown", f"a table of factors > 0 (slowdown.{vertex})")
    if name == "network" and table.max_iter < 1:
        fail("max_iter", ">= 1")
    if name == "arrays":
        _check_arrays_values(table, path, fail)
    for key in ("seed",):
        if hasattr(table, key) and getattr(table, key) < 0:
            fail(key, "a non-negative integer")


def _check_arrays_values(
    table: ArraysConfig, path: str, fail: Callable[[str, str], None]
) -> None:
    if not _DEVICE_PATTERN.fullmatch(table.device):
        fail("device", "'cpu', 'cuda' or 'cuda:N'")
    if table.backend == "numpy" and table.device != "cpu":
        fail(
            "device",
            "'cpu' with arrays.backend = 'numpy'; set arrays.backend = "
            "'torch' to run on a GPU",
        )
    share = table.gpus_per_actor
    if share is not None and not (math.isfinite(share) and 0 < share <= 1):
        fail("gpus_per_actor", "in (0, 1]")
    try:
        table.array_backend()
    except InvalidValueError as error:
        # Only a missing torch is left for ArrayBackend to reject.
        raise ConfigError(f"[arrays] in {path}: {error}") from None


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read and validate a TOML experiment configuration.

    Parameters
    ----------
    path : str or Path
        The TOML file.
    overrides : dict, optional
        ``{"table.key": value}`` pairs applied on top of the file, for example
        from the command line.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or has an unknown key or a
        value of the wrong type or range.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(raw) - set(_TABLES))
    if unknown:
        raise ConfigError(
            f"unknown table [{unknown[0]}] in {path}; valid tables are {list(_TABLES)}"
        )
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] in {path} must be a table, got {table!r}")
    for dotted, value in (overrides or {}).items():
        table_name, _, key = dotted.partition(".")
        if table_name not in _TABLES or not key:
            raise ConfigError(
                f"--set {dotted} names no configuration value; use table.key with a "
                f"table from {list(_TABLES)}"
            )
        raw.setdefault(table_name, {})[key] = value
    overridden = frozenset(overrides or {})
    tables = {
        name: _build_table(name, raw.get(name, {}), str(path), overridden)
        for name in _TABLES
    }
    if "training" not in raw:
        tables["training"] = None
    _check_combination(tables, str(path))
    return ExperimentConfig(**tables, source_path=str(path))
