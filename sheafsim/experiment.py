"""Run an experiment configuration end to end and write its run directory.

The run directory contains:

* ``config.json``, the resolved configuration, written before the run starts;
* ``convergence.parquet`` and ``edges.parquet``, the metric tables (streamed by
  the coordinator during an actor run, written at the end of an in-process
  run), and ``vertices.parquet``, the counters of every vertex actor;
* ``summary.json``: status, steps, wall time, final energy, errors against the
  forward pass and against the source model, schedule, actors, Ray address and
  array backend (``array_backend``, for example ``"torch/cpu/float32"``);
  written at the end, also when a vertex actor dies (status ``failed``);
* ``outputs.npy``, the final output stalk, shape ``(n_out, samples)``, unless
  the run failed.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sheafsim.backend import to_numpy
from sheafsim.config import ExperimentConfig
from sheafsim.dynamics import diffuse, initial_state
from sheafsim.errors import ConfigError, RuntimeFailure, SheafsimError
from sheafsim.integrators import stability_limit
from sheafsim.neural import NeuralSheaf
from sheafsim.recording import SCHEMAS, RunRecorder, existing_tables, remove_table
from sheafsim.stepsize import estimate_lambda_max

__all__ = ["Experiment", "prepare", "run_experiment"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, float, float], None]


@dataclass
class Experiment:
    """A network, its inputs and what the outputs should equal."""

    net: NeuralSheaf
    x: np.ndarray
    reference: np.ndarray | None
    info: dict[str, Any]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    # Pixel intensities 0..16 scaled to [0, 1].
    return data.data / 16.0, data.target


def prepare(config: ExperimentConfig) -> Experiment:
    """Build the network and the input columns that ``config`` describes."""
    network, data = config.network, config.data
    info: dict[str, Any] = {}
    model = None
    if network.source == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        features, labels = _digits()
        train_x, test_x, train_y, test_y = train_test_split(
            features, labels, test_size=0.25, random_state=network.seed, stratify=labels
        )
        model = MLPClassifier(
            hidden_layer_sizes=tuple(network.hidden_layers),
            activation="relu",
            max_iter=network.max_iter,
            random_state=network.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(train_x, train_y)
        info["test_accuracy"] = float(model.score(test_x, test_y))
        info["train_samples"] = len(train_y)
        net = NeuralSheaf.from_sklearn(model)
    elif network.source == "random":
        output: Any = network.output
        net = NeuralSheaf.random(network.widths, seed=network.seed, output=output)
    else:
        net = _load_npz(network.path, config.source_path)

    if data.dataset == "digits":
        features, _ = _digits()
        if features.shape[1] != net.widths[0]:
            raise ConfigError(
                f"data.dataset 'digits' has 64 features but the network expects "
                f"{net.widths[0]} inputs; use data.dataset = 'random'"
            )
        x = features.T
    else:
        count = 256 if data.samples == "all" else int(data.samples)
        x = np.random.default_rng(data.seed).normal(size=(net.widths[0], count))
    if isinstance(data.samples, int):
        x = x[:, : data.samples]
    reference = None
    if model is not None and data.dataset == "digits":
        reference = model.predict_proba(x.T).T
    info["samples"] = int(x.shape[1])
    info["widths"] = net.widths
    info["output"] = net.output
    return Experiment(net, np.ascontiguousarray(x), reference, info)


def _load_npz(path: str, config_path: str) -> NeuralSheaf:
    if not path:
        raise ConfigError(
            f"network.path is missing in {config_path}; network.source = 'npz' "
            "needs the path of an .npz archive of W1, b1, W2, b2, ..."
        )
    resolved = Path(path)
    if not resolved.is_absolute() and config_path:
        resolved = Path(config_path).parent / resolved
    if not resolved.exists():
        raise ConfigError(f"network.path {path!r} in {config_path} not found")
    try:
        archive = np.load(resolved, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"network.path {resolved} is not a readable .npz archive ({error}); save "
            "the weights with numpy.savez(path, W1=..., b1=..., ...)"
        ) from None
    with archive:
        files = list(getattr(archive, "files", []))
        layers = sorted(
            int(key[1:]) for key in files if key.startswith("W") and key[1:].isdigit()
        )
        expected = [name for i in layers for name in (f"W{i}", f"b{i}")]
        missing = [name for name in expected if name not in files]
        if not layers or layers != list(range(1, len(layers) + 1)) or missing:
            raise ConfigError(
                f"{resolved} must contain arrays W1, b1, W2, b2, ...; found {files}"
            )
        weights = [archive[f"W{i}"] for i in layers]
        biases = [archive[f"b{i}"] for i in layers]
        output = str(archive["output"]) if "output" in files else "identity"
    try:
        return NeuralSheaf(weights, biases, output=output)  # type: ignore[arg-type]
    except SheafsimError as error:
        raise ConfigError(f"network in {resolved}: {error}") from None


def resolve_dt(config: ExperimentConfig, experiment: Experiment) -> tuple[float, float]:
    """Return ``(dt, lambda_max)``; ``dt = "auto"`` is 90% of the stable step."""
    settings = config.diffusion
    start = initial_state(experiment.net, experiment.x, settings.init, settings.seed)
    values = [start[v] for v in experiment.net.free_vertices]
    lam = float(
        np.max(estimate_lambda_max(experiment.net, values, settings.output_mode))
    )
    if settings.dt == "auto":
        limit = stability_limit(settings.integrator)
        return 0.9 * limit / (settings.alpha * lam * 1.02), lam
    return float(settings.dt), lam


def _energy(net: NeuralSheaf, state: dict[str, Any]) -> float:
    """Return the sheaf energy of ``state`` in numpy float64 on the host."""
    from sheafsim._kernels import edge_discord, neural_residuals

    x = np.asarray(to_numpy(state["x"]), dtype=np.float64)
    values = [
        np.asarray(to_numpy(state[v]), dtype=np.float64) for v in net.free_vertices
    ]
    first = net.weights[0] @ x + net.biases[0]
    res = neural_residuals(np, net, first, values)
    return 0.5 * sum(edge_discord(np, net, res).values())


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise RuntimeFailure unless a TCP connection to ``host:port`` opens."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise RuntimeFailure(
            f"Ray address {address!r} is invalid; use 'auto', 'host:port' or "
            "'ray://host:port'"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout_s):
            pass
    except OSError as error:
        raise RuntimeFailure(
            f"could not reach the Ray cluster at {address!r} within {timeout_s:g} s "
            f"({error}); check that 'ray start --head' runs there and the port is "
            "open, or leave runtime.address empty to start a local Ray"
        ) from None


def _start_ray(config: ExperimentConfig) -> str:
    import ray

    runtime = config.runtime
    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    if runtime.address:
        if runtime.address.startswith("ray://"):
            try:
                import grpc  # noqa: F401
                import ray.util.client  # noqa: F401
            except ImportError:
                raise RuntimeFailure(
                    f"address {runtime.address!r} uses Ray Client, which needs "
                    "pip install 'ray[client]'; or run sheafsim on the head node "
                    "with --address auto"
                ) from None
        if runtime.address != "auto":
            _check_reachable(runtime.address)
        try:
            ray.init(address=runtime.address, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
            raise RuntimeFailure(
                f"could not connect to the Ray cluster at {runtime.address!r}: "
                f"{error}. Check the address, or leave runtime.address empty to "
                "start a local Ray"
            ) from None
    else:
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
        }
        if runtime.num_cpus:
            options["num_cpus"] = runtime.num_cpus
        ray.init(**options)
    return str(ray.get_runtime_context().gcs_address)


RUN_FILES = ("config.json", "summary.json", "outputs.npy", "weights.npz")
"""Files of a run directory besides the Parquet tables."""

RUN_TABLES = tuple(SCHEMAS)
"""Parquet tables of a run directory, as ``<name>.parquet``."""


def _prepare_directory(directory: Path, overwrite: bool) -> None:
    """Create the run directory, refusing to mix two runs in one directory.

    With ``overwrite`` the files of the earlier run are deleted here, so a run
    that then fails leaves no stale summary behind.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"run directory {directory} exists and is not a directory; choose "
            "another --output"
        )
    # A config.json alone is what a run that failed before it started leaves.
    existing = [n for n in RUN_FILES[1:] if (directory / n).exists()]
    existing += [f"{name}.parquet" for name in existing_tables(directory, RUN_TABLES)]
    if existing and not overwrite:
        raise ConfigError(
            f"run directory {directory} already contains a run "
            f"({', '.join(existing)}); pass --overwrite (or set "
            "output.overwrite = true) to replace it, or choose another --output"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run directory {directory}: {error}") from None
    for name in RUN_FILES:
        (directory / name).unlink(missing_ok=True)
    if existing:
        # overwrite: no table of the earlier run may stay next to the new one.
        for name in RUN_TABLES:
            remove_table(directory / f"{name}.parquet")


def _resolved(config: ExperimentConfig, run_id: str, directory: Path) -> dict:
    """Return the configuration as run: the run id and the real run directory."""
    data = config.to_dict()
    data["output"]["directory"] = str(directory)
    return {"run_id": run_id, **data}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON through a temporary file, so readers see it whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")
    tmp.replace(path)


def _inprocess_tables(
    directory: Path,
    run_id: str,
    experiment: Experiment,
    state: dict[str, Any],
    trace: dict[str, list],
    crossings: np.ndarray,
) -> dict[str, int]:
    """Write the trace of an in-process run as the convergence, edge and
    crossings tables.

    The last row gets ``error_vs_exact``, the largest difference between the
    final stalks and the forward pass, as in an actor run. The crossings
    ``(step, layer, neuron, sample)`` are counted per step and layer.
    """
    net = experiment.net
    forward = net.forward(experiment.x).state
    error = max(float(np.max(np.abs(state[v] - forward[v]))) for v in net.free_vertices)
    last = len(trace["step"]) - 1
    kinds = {info.name: (info.kind, info.layer) for info in net.edges}
    with RunRecorder(
        directory, run_id, tables=("convergence", "edges", "crossings"), overwrite=True
    ) as recorder:
        if len(crossings):
            keys, counts = np.unique(crossings[:, :2], axis=0, return_counts=True)
            recorder.rows(
                "crossings",
                (
                    {"step": int(step), "layer": int(layer), "crossings": int(count)}
                    for (step, layer), count in zip(keys, counts, strict=True)
                ),
            )
        for i, step in enumerate(trace["step"]):
            recorder.convergence(
                step,
                trace["energy"][i],
                trace["max_update"][i],
                error_vs_exact=error if i == last else None,
                time_s=0.0,
            )
            recorder.edges(
                {
                    "time_s": 0.0,
                    "step": step,
                    "edge": name,
                    "edge_type": kind,
                    "layer": layer,
                    "discord": trace[name][i],
                }
                for name, (kind, layer) in kinds.items()
            )
    return {name: w.rows_written for name, w in recorder.writers.items()}


def run_experiment(
    config: ExperimentConfig,
    output_dir: str | Path | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``config`` and write its run directory; return the summary.

    Parameters
    ----------
    output_dir : path, optional
        Overrides ``output.directory``.
    progress : callable, optional
        ``progress(step, max_change, elapsed_s)``, called during the run.
    log : callable, optional
        Receives one-line status messages (the CLI prints them).
    """
    say = log or (lambda message: logger.info("%s", message))
    directory = Path(output_dir or config.output.directory)
    _prepare_directory(directory, config.output.overwrite)
    try:
        return _run_in(directory, config, progress, say)
    except SheafsimError:
        # Rejected before it ran (a bad step size, say): drop the config.json
        # this run wrote, so the directory does not look like a started run.
        if not (directory / "summary.json").exists():
            (directory / "config.json").unlink(missing_ok=True)
        raise


def _run_in(
    directory: Path,
    config: ExperimentConfig,
    progress: Progress | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``config`` into the prepared ``directory``; see :func:`run_experiment`."""
    run_id = uuid.uuid4().hex[:8]

    # Check the address before the model is fitted, so a bad one fails fast.
    started = time.perf_counter()
    address = config.runtime.address
    if config.runtime.backend == "actors" and address not in ("", "auto"):
        _check_reachable(address)
    if config.training is not None:
        return _run_training(config, directory, run_id, started, say)
    experiment = prepare(config)
    if "test_accuracy" in experiment.info:
        say(
            f"fitted MLPClassifier {experiment.net.widths}: test accuracy "
            f"{experiment.info['test_accuracy']:.4f}"
        )
    _check_slowdown(config, experiment.net)
    dt, lam = resolve_dt(config, experiment)
    settings = config.diffusion
    say(
        f"diffusing {experiment.x.shape[1]} samples, integrator {settings.integrator}, "
        f"dt {dt:.4g} (lambda_max ~ {lam:.3g}), tol {settings.tol:g}"
    )
    common: dict[str, Any] = {
        "alpha": settings.alpha,
        "dt": dt,
        "tol": settings.tol,
        "min_steps": settings.min_steps,
        "max_steps": settings.max_steps,
        "init": settings.init,
        "seed": settings.seed,
        "output_mode": settings.output_mode,
        "integrator": settings.integrator,
    }
    _write_json(directory / "config.json", _resolved(config, run_id, directory))
    arrays = config.arrays.array_backend()
    summary: dict[str, Any] = {
        "run_id": run_id,
        "backend": config.runtime.backend,
        "array_backend": str(arrays),
    }
    if config.runtime.backend == "inprocess":
        result = diffuse(
            experiment.net,
            experiment.x,
            record_crossings=True,
            record_every=config.runtime.report_every,
            progress=progress,
            backend=arrays,
            **common,
        )
        summary.update(n_actors=0, schedule="inprocess", ray_address=None)
        host_state = {v: to_numpy(value) for v, value in result.state.items()}
        summary["table_rows"] = _inprocess_tables(
            directory, run_id, experiment, host_state, result.trace, result.crossings
        )
    else:
        import ray

        from sheafsim.runtime import DelayModel, diffuse_on_actors

        runtime, delays = config.runtime, config.delays
        owns_ray = not ray.is_initialized()
        address = _start_ray(config)
        say(f"Ray at {address}; starting {len(experiment.net.vertices) + 1} actors")
        summary.update(
            n_actors=len(experiment.net.vertices) + 1,
            schedule=runtime.schedule,
            ray_address=address,
        )
        try:
            result = diffuse_on_actors(  # type: ignore[assignment]
                experiment.net,
                experiment.x,
                schedule=runtime.schedule,
                report_every=runtime.report_every,
                staleness_bound=runtime.staleness_bound,
                convergence_window=runtime.convergence_window,
                delays=(
                    DelayModel(
                        compute_s=delays.compute_s,
                        message_s=delays.message_s,
                        jitter=delays.jitter,
                        slowdown=dict(delays.slowdown),
                        seed=delays.seed,
                    )
                    if delays.active
                    else None
                ),
                progress=progress,
                record_dir=directory,
                run_id=run_id,
                overwrite=True,
                backend=arrays,
                gpus_per_actor=config.arrays.gpus_per_actor,
                **common,
            )
        except RuntimeFailure as failure:
            return _failed(directory, summary, failure, started, experiment.info)
        except KeyboardInterrupt:
            return _interrupted(directory, summary, started, experiment.info)
        finally:
            # A Ray started here is shut down here; a caller's Ray stays up.
            if owns_ray:
                ray.shutdown()
        summary.update(
            n_actors=result.n_actors,  # type: ignore[attr-defined]
            table_rows=result.table_rows,  # type: ignore[attr-defined]
        )

    output = np.asarray(to_numpy(result.output), dtype=np.float64)
    forward = experiment.net.forward(experiment.x).output
    summary.update(
        status=result.status,
        message=result.message,
        steps=int(result.steps),
        wall_time_s=float(result.wall_time_s),
        total_time_s=time.perf_counter() - started,
        final_energy=_energy(experiment.net, result.state),
        max_abs_error_vs_forward=float(np.max(np.abs(output - forward))),
        integrator=settings.integrator,
        dt=dt,
        lambda_max_estimate=lam,
        **experiment.info,
    )
    if experiment.reference is not None:
        summary["max_abs_error_vs_predict_proba"] = float(
            np.max(np.abs(output - experiment.reference))
        )
    np.save(directory / "outputs.npy", output)
    _write_json(directory / "summary.json", summary)
    return summary


def _check_slowdown(config: ExperimentConfig, net: NeuralSheaf) -> None:
    """Reject slowdown factors for vertices the network does not have."""
    unknown = [v for v in config.delays.slowdown if v not in net.free_vertices]
    if unknown:
        raise ConfigError(
            f"delays.slowdown in {config.source_path} names unknown vertices "
            f"{unknown}; use vertices from {net.free_vertices}"
        )


def _training_network(config: ExperimentConfig, n_in: int, n_out: int) -> NeuralSheaf:
    """Build the initial network of a training run and check it fits the data."""
    network, training = config.network, config.training
    assert training is not None
    if network.source == "npz":
        net = _load_npz(network.path, config.source_path)
    else:
        net = NeuralSheaf.random(
            network.widths,
            seed=network.seed,
            output=network.output,  # type: ignore[arg-type]
        )
    widths = net.widths
    if widths[0] != n_in or widths[-1] != n_out:
        raise ConfigError(
            f"training.dataset {training.dataset!r} has {n_in} inputs and {n_out} "
            f"outputs, but the network widths are {widths}; use widths = "
            f"[{n_in}, ..., {n_out}] in [network] of {config.source_path}"
        )
    return net


def _run_training(
    config: ExperimentConfig,
    directory: Path,
    run_id: str,
    started: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Train the configured network on its data set and write the run directory."""
    from sheafsim.baseline import train_gradient_descent
    from sheafsim.datasets import load_dataset
    from sheafsim.training import train

    training = config.training
    assert training is not None
    data = load_dataset(training.dataset, seed=training.seed)
    net = _training_network(config, data.x_train.shape[0], data.y_train.shape[0])
    _check_slowdown(config, net)
    expected = data.output
    if net.output != expected:
        raise ConfigError(
            f"training.dataset {training.dataset!r} needs network.output = "
            f"{expected!r}, not {net.output!r}"
        )
    common: dict[str, Any] = {
        "alpha": training.alpha,
        "beta": None if training.beta == "auto" else training.beta,
        "dt": None if training.dt == "auto" else training.dt,
        "epochs": training.epochs,
        "steps_per_epoch": training.steps_per_epoch,
        "x_test": data.x_test,
        "y_test": data.y_test,
    }
    _write_json(directory / "config.json", _resolved(config, run_id, directory))
    say(
        f"training {net.widths} on {training.dataset} ({data.x_train.shape[1]} "
        f"samples) for {training.epochs} x {training.steps_per_epoch} steps"
    )

    def report(epoch: int, step: int, loss: float | None) -> None:
        say(f"epoch {epoch:>5d}  step {step:>9d}  train loss {loss:.5g}")

    arrays = config.arrays.array_backend()
    summary: dict[str, Any] = {
        "run_id": run_id,
        "task": "training",
        "backend": config.runtime.backend,
        "array_backend": str(arrays),
        "dataset": training.dataset,
        "widths": net.widths,
    }
    if config.runtime.backend == "inprocess":
        reset = training.reset_each_epoch
        tables = ("training", "spectra") if training.spectral_every else ("training",)
        with RunRecorder(directory, run_id, tables=tables, overwrite=True) as recorder:
            result = train(
                net,
                data.x_train,
                data.y_train,
                reset_each_epoch=None if reset == "auto" else bool(reset),
                log_every=training.log_every,
                progress=report,
                on_record=lambda row: recorder.training(**row),
                spectral_every=training.spectral_every,
                spectral_samples=training.spectral_samples,
                on_spectrum=lambda row: recorder.rows("spectra", [row]),
                backend=arrays,
                **common,
            )
        summary.update(n_actors=0, schedule="inprocess", ray_address=None)
        summary["table_rows"] = {
            name: w.rows_written for name, w in recorder.writers.items()
        }
    else:
        import ray

        from sheafsim.runtime import train_on_actors

        owns_ray = not ray.is_initialized()
        address = _start_ray(config)
        summary.update(
            n_actors=len(net.vertices) + 1,
            schedule=config.runtime.schedule,
            ray_address=address,
        )
        say(f"Ray at {address}; starting {len(net.vertices) + 1} actors")
        try:
            result = train_on_actors(
                net,
                data.x_train,
                data.y_train,
                schedule=config.runtime.schedule,
                staleness_bound=config.runtime.staleness_bound,
                record_dir=directory,
                run_id=run_id,
                overwrite=True,
                spectral_every=training.spectral_every,
                spectral_samples=training.spectral_samples,
                backend=arrays,
                gpus_per_actor=config.arrays.gpus_per_actor,
                **common,
            )
        except RuntimeFailure as failure:
            return _failed(directory, summary, failure, started, {})
        except KeyboardInterrupt:
            return _interrupted(directory, summary, started, {})
        finally:
            if owns_ray:
                ray.shutdown()
        summary["table_rows"] = result.table_rows
    history = result.history
    summary.update(
        status=result.status,
        message=result.message,
        steps=result.steps,
        wall_time_s=result.wall_time_s,
        total_time_s=time.perf_counter() - started,
        final_energy=result.energy[-1] if result.energy else None,
        train_loss=history["train_loss"][-1],
        test_loss=history["test_loss"][-1],
        train_accuracy=history["train_accuracy"][-1],
        test_accuracy=history["test_accuracy"][-1],
    )
    if training.baseline_lr > 0:
        baseline = train_gradient_descent(
            net,
            data.x_train,
            data.y_train,
            lr=training.baseline_lr,
            epochs=training.epochs * training.steps_per_epoch,
            x_test=data.x_test,
            y_test=data.y_test,
        )
        summary["table_rows"]["baseline"] = _baseline_table(
            directory, run_id, baseline.history
        )
        summary["baseline"] = {
            "lr": training.baseline_lr,
            "epochs": training.epochs * training.steps_per_epoch,
            "status": baseline.status,
            "train_loss": baseline.history["train_loss"][-1],
            "test_loss": baseline.history["test_loss"][-1],
            "train_accuracy": baseline.history["train_accuracy"][-1],
            "test_accuracy": baseline.history["test_accuracy"][-1],
            "wall_time_s": baseline.wall_time_s,
        }
    weights: dict[str, Any] = {"output": np.array(result.net.output)}
    for i, (w, b) in enumerate(
        zip(result.net.weights, result.net.biases, strict=True), start=1
    ):
        weights[f"W{i}"] = to_numpy(w)
        weights[f"b{i}"] = to_numpy(b).reshape(-1)
    np.savez(directory / "weights.npz", **weights)
    _write_json(directory / "summary.json", summary)
    return summary


# The baseline logs every gradient step; its table keeps about this many rows.
BASELINE_TABLE_ROWS = 2000


def _baseline_table(directory: Path, run_id: str, history: dict[str, list]) -> int:
    """Write the gradient-descent history, thinned to about 2000 rows, as a table."""
    count = len(history["epoch"])
    stride = max(1, count // BASELINE_TABLE_ROWS)
    keep = [i for i in range(count) if i % stride == 0 or i == count - 1]
    columns = (
        "epoch",
        "step",
        "train_loss",
        "test_loss",
        "train_accuracy",
        "test_accuracy",
    )
    with RunRecorder(
        directory, run_id, tables=("baseline",), overwrite=True
    ) as recorder:
        recorder.rows(
            "baseline", ({key: history[key][i] for key in columns} for i in keep)
        )
    return len(keep)


def _interrupted(
    directory: Path, summary: dict[str, Any], started: float, info: dict[str, Any]
) -> dict[str, Any]:
    """Write the summary of a run stopped with Ctrl-C, and return it."""
    summary.update(
        status="interrupted",
        message="interrupted (Ctrl-C); the tables keep the rows written before",
        steps=None,
        wall_time_s=None,
        total_time_s=time.perf_counter() - started,
        final_energy=None,
        max_abs_error_vs_forward=None,
        **info,
    )
    _write_json(directory / "summary.json", summary)
    return summary


def _failed(
    directory: Path,
    summary: dict[str, Any],
    failure: RuntimeFailure,
    started: float,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write the summary of a run that a failed actor ended, and return it."""
    reports = getattr(failure, "reports", None) or []
    summary.update(
        status="failed",
        message=str(failure),
        steps=max((row.step for row in reports), default=0),
        wall_time_s=max((row.time_s for row in reports), default=None),
        total_time_s=time.perf_counter() - started,
        final_energy=None,
        max_abs_error_vs_forward=None,
        **info,
    )
    _write_json(directory / "summary.json", summary)
    return summary


def _finite(value: Any) -> Any:
    """Replace NaN and infinities, which JSON lacks, by null, at any depth."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return float(value)
    return value
