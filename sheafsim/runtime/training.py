"""Training without a backward pass on vertex actors.

:func:`train_on_actors` runs the joint step of :func:`sheafsim.train` with one
Ray actor per vertex (arXiv:2603.14831). The actor at the upstream end of
affine edge ``l`` owns ``W_l`` and ``b_l``. In each step it computes the edge
residual ``r_l = W_l a_{l-1} + b_l - z_l`` from its own stalk and the message of
``z_l``, pulls it back for its stalk force, and takes its weight step
``W_l -= beta dt r_l a_{l-1}^T``, ``b_l -= beta dt sum r_l``. No weight update
needs anything but that edge. The labels are boundary data on the output edge.

Under the synchronous schedule the actors compute the in-process iterates, so
the weights and stalks match ``train(..., reset_each_epoch=False)``. Under the
asynchronous schedule each vertex learns from the latest messages it holds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from sheafsim.backend import ArrayBackend, resolve_backend
from sheafsim.errors import InvalidValueError
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import resolve_pins
from sheafsim.recording import existing_tables
from sheafsim.runtime.coordinator import StoppingRule
from sheafsim.runtime.driver import (
    _check_run_options,
    host_array,
    host_mapping,
    host_network,
    mask_layers,
)
from sheafsim.runtime.gpu import check_gpu_options, place_on_gpus
from sheafsim.runtime.metrics import RecordSettings, TrainingMonitor
from sheafsim.runtime.runner import ActorRun, ProgressCallback
from sheafsim.runtime.spec import (
    DelayModel,
    RunSettings,
    neural_training_specs,
    static_edge_discord,
)
from sheafsim.training import (
    HISTORY_KEYS,
    SPECTRA_KEYS,
    TrainingResult,
    TrainingStep,
    _copy_net,
    _positive_int,
    _start_values,
    check_count,
    check_training_inputs,
    training_vertices,
)

__all__ = ["train_on_actors", "ActorTrainingResult"]

logger = logging.getLogger(__name__)

TRAINING_TABLES = (
    "convergence",
    "edges",
    "vertices",
    "training",
    "crossings",
    "staleness",
)
"""Tables that a recorded training run writes."""


@dataclass
class ActorTrainingResult(TrainingResult):
    """Outcome of :func:`train_on_actors`: a :class:`TrainingResult` and run data.

    Attributes
    ----------
    schedule : str
    n_actors : int
        Vertex actors plus the coordinator.
    run_id : str
    vertex_stats : dict of str to dict
        Final counters of every vertex.
    table_rows : dict of str to int
        Rows written per table, when the run recorded them.
    staleness_counts : dict of str to dict of int to int
        Steps taken by every stepping vertex, by the staleness of the messages
        each step used.
    crossings : ndarray of int64, shape (n, 3)
        ReLU boundary crossings as rows ``(step, layer, count)``, as in
        :class:`~sheafsim.runtime.driver.ActorRunResult`.
    backend : str
        Backend of the stepping vertex actors, as ``name/device/dtype``. The
        trained network and the stalks are host numpy float64.
    """

    schedule: str = "sync"
    n_actors: int = 0
    run_id: str = ""
    vertex_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    table_rows: dict[str, int] = field(default_factory=dict)
    staleness_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    crossings: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), dtype=np.int64)
    )
    backend: str = str(ArrayBackend())


def train_on_actors(
    net: NeuralSheaf,
    x: Any,
    y: Any,
    *,
    alpha: float = 1.0,
    beta: float | None = None,
    dt: float | None = None,
    epochs: int = 100,
    steps_per_epoch: int = 1000,
    init: str | Mapping[str, Any] = "random",
    seed: int | None = 0,
    x_test: Any = None,
    y_test: Any = None,
    schedule: str = "sync",
    report_every: int | None = None,
    staleness_bound: int | None = None,
    delays: DelayModel | None = None,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 1.0,
    timeout_s: float | None = None,
    record_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    overwrite: bool = False,
    spectral_every: int = 0,
    spectral_samples: int = 32,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    gpus_per_actor: float | None = None,
) -> ActorTrainingResult:
    """Train ``net`` by the joint sheaf dynamics with one Ray actor per vertex.

    The arguments shared with :func:`sheafsim.train` mean the same. The stalks
    are never reset between epochs (warm start), so the synchronous schedule
    reproduces ``train(..., reset_each_epoch=False)``.

    As in :func:`sheafsim.runtime.diffuse_on_actors`, the driver works on host
    numpy float64 copies of ``net`` and the data, and each stepping vertex
    actor moves its stalk, maps and pins to ``backend`` when it starts. The
    weights learn on the backend and come back as host numpy float64.

    Parameters
    ----------
    net, x, y, alpha, beta, dt, epochs, steps_per_epoch, init, seed, x_test, \
y_test
        As in :func:`sheafsim.train`.
    schedule : {"sync", "async"}
    report_every : int, optional
        Steps between two vertex reports; must divide ``steps_per_epoch``.
        Default: ``steps_per_epoch`` or 100, whichever is smaller, when it
        divides ``steps_per_epoch``, else ``steps_per_epoch``.
    staleness_bound, delays, progress, progress_interval_s, timeout_s
        As in :func:`sheafsim.runtime.diffuse_on_actors`.
    record_dir, run_id, overwrite
        As in :func:`sheafsim.runtime.diffuse_on_actors`; a recorded run also
        writes ``training.parquet``, one row per epoch.
    spectral_every, spectral_samples
        As in :func:`sheafsim.train`, but ``spectral_every`` must be a
        multiple of ``steps_per_epoch``: the coordinator computes the spectra
        from the weights sent at epoch ends. A recorded run writes them to
        ``spectra.parquet``.
    backend, device, dtype, gpus_per_actor
        As in :func:`sheafsim.runtime.diffuse_on_actors`. The coordinator
        evaluates losses and spectra on the host in float64.

    Returns
    -------
    ActorTrainingResult
        ``history`` has one row per epoch, computed by the coordinator from the
        weights the vertices send at each epoch's end.

    Raises
    ------
    InvalidValueError, ShapeError
        Bad arguments, or a CUDA backend that the cluster cannot hold (see
        :func:`sheafsim.runtime.diffuse_on_actors`), before any actor starts.
    RuntimeFailure
        A vertex actor or the coordinator failed or died, or the run timed out.
    """
    if not isinstance(net, NeuralSheaf):
        raise InvalidValueError(f"net must be a NeuralSheaf, got {type(net).__name__}")
    array_backend = resolve_backend(backend, device, dtype)
    check_gpu_options(array_backend, gpus_per_actor)
    net = host_network(net)
    x, y, x_test, y_test = (host_array(a) for a in (x, y, x_test, y_test))
    init = host_mapping(init)
    inputs = check_training_inputs(
        net, x, y, x_test, y_test, alpha, beta, dt, epochs, steps_per_epoch
    )
    x, y, test = inputs.x, inputs.y, inputs.test
    alpha, beta, dt = inputs.alpha, inputs.beta, inputs.dt
    epochs, steps_per_epoch = inputs.epochs, inputs.steps_per_epoch
    n_train = x.shape[1]
    spectral_every = check_count("spectral_every", spectral_every, minimum=0)
    spectral_samples = check_count("spectral_samples", spectral_samples, minimum=1)
    if spectral_every % steps_per_epoch:
        raise InvalidValueError(
            f"spectral_every={spectral_every} is not a multiple of "
            f"steps_per_epoch={steps_per_epoch}; on actors the weights reach the "
            "coordinator only at epoch ends"
        )
    if report_every is None:
        report_every = min(steps_per_epoch, 100)
        if steps_per_epoch % report_every:
            report_every = steps_per_epoch
    report_every = _positive_int("report_every", report_every)
    if steps_per_epoch % report_every:
        raise InvalidValueError(
            f"report_every={report_every} does not divide steps_per_epoch="
            f"{steps_per_epoch}; the weights are sent with the report that ends "
            "an epoch, so choose a divisor"
        )
    options = _check_run_options(
        "euler",
        schedule,
        report_every,
        None,
        staleness_bound,
        None,
        delays,
        timeout_s,
        progress,
        progress_interval_s,
    )
    report_every, window, staleness_bound, convergence_window = options[:4]
    timeout_s, progress_interval_s = options[4:]

    start = _copy_net(net)
    names = training_vertices(start)
    values = _start_values(start, x, init, seed)
    dims = {v: start.stalk_dim(v) for v in names}
    hard, soft = resolve_pins((), (), dims, n_train, np, x)
    specs, static_energy = neural_training_specs(
        start, x, y, dict(zip(names, values, strict=True)), hard, soft
    )
    if delays is not None:
        unknown = [v for v in delays.slowdown if v not in start.vertices]
        if unknown:
            raise InvalidValueError(
                f"delays.slowdown names unknown vertices {unknown}; use vertices "
                f"from {start.vertices}"
            )
        for spec, delay_seed in zip(specs, delays.child_seeds(len(specs)), strict=True):
            spec.delay_seed = delay_seed

    record = None
    if record_dir is not None:
        directory = os.path.abspath(os.fspath(record_dir))
        existing = existing_tables(directory, TRAINING_TABLES)
        if existing and not overwrite:
            raise InvalidValueError(
                f"record_dir {directory} already contains the tables {existing}; pass "
                "overwrite=True or choose another directory"
            )
        record = RecordSettings(
            directory=directory,
            run_id=run_id or os.urandom(4).hex(),
            edge_types={info.name: (info.kind, info.layer) for info in start.edges},
            static_edges=static_edge_discord(specs),
            overwrite=overwrite,
            tables=TRAINING_TABLES + (("spectra",) if spectral_every else ()),
        )
    elif run_id is not None:
        raise InvalidValueError(f"run_id={run_id!r} needs record_dir; give one")

    max_steps = epochs * steps_per_epoch
    settings = RunSettings(
        step_size=alpha * dt,
        integrator="euler",
        max_steps=max_steps,
        report_every=report_every,
        window=window,
        schedule=schedule,
        staleness_bound=staleness_bound,
        delays=delays,
        tol=0.0,
        convergence_window=convergence_window,
        weight_rate=beta * dt,
        epoch_steps=steps_per_epoch,
        backend=array_backend,
    )
    # tol 0 never converges, so the run takes all epochs * steps_per_epoch steps.
    rule = StoppingRule(
        tol=0.0,
        min_steps=max_steps,
        max_steps=max_steps,
        alpha=alpha,
        dt=dt,
        window=window,
        static_energy=static_energy,
        schedule=schedule,
        convergence_window=convergence_window,
    )
    monitor = TrainingMonitor(
        start, [(x, y), test], steps_per_epoch, spectral_every, spectral_samples
    )
    if not ray.is_initialized():
        logger.info("Ray is not initialised; starting a local instance")
        ray.init(include_dashboard=False)
    share = place_on_gpus(specs, settings, gpus_per_actor)
    run = ActorRun(
        specs,
        settings,
        rule,
        record,
        monitor,
        mask_layers(start),
        gpus_per_actor=share,
    )
    try:
        end, final, stats, _ = run.execute(progress, progress_interval_s, timeout_s)
        learners = [spec.name for spec in specs if any(e.trains for e in spec.edges)]
        layers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for pairs in run.call_vertices("learned_maps", learners).values():
            for edge, pair in pairs.items():
                layers[int(edge.removeprefix("affine"))] = pair
        weights = [layers[i][0] for i in range(1, start.depth + 2)]
        biases = [layers[i][1].reshape(-1) for i in range(1, start.depth + 2)]
        finite = all(np.all(np.isfinite(a)) for a in [*weights, *biases])
        if finite:
            trained = NeuralSheaf(weights, biases, output=start.output)  # type: ignore[arg-type]
        else:
            # As in process: the weights at the end of the last finite epoch.
            trained = run.call_coordinator("last_finite_net")
        rows = run.call_coordinator("training_rows")
        spectra_rows = run.call_coordinator("spectra_rows")
        state = {v: final[v] for v in names}
        # A batch mean, as in every other row of the convergence table.
        energy = (
            TrainingStep(trained, x, y, alpha, beta, dt).energy(
                [state[v] for v in names]
            )
            / n_train
        )
        if not finite:
            energy = float("nan")
        table_rows = run.finalize_records(
            {
                "time_s": end.elapsed_s,
                "step": int(end.steps),
                "energy": energy,
                "max_update": float(end.max_update),
                "edges": {},
            },
            stats,
        )
    finally:
        run.kill_actors()

    history: dict[str, list] = {key: [row[key] for row in rows] for key in HISTORY_KEYS}
    diverged = any(
        value is not None and not np.isfinite(value) for value in history["train_loss"]
    )
    failed = not finite or end.status in ("diverged", "non_finite")
    status = "diverged" if diverged or failed else "completed"
    message = (
        f"trained {epochs} epochs of {steps_per_epoch} steps on actors"
        if status == "completed"
        else f"{end.message}; a lower beta*n_train (now {beta * n_train:.4g}) "
        "also helps"
    )
    return ActorTrainingResult(
        status=status,
        net=trained,
        history=history,
        steps=int(end.steps),
        wall_time_s=end.elapsed_s,
        message=message,
        state=state,
        energy=[*end.energy, energy],
        schedule=schedule,
        n_actors=len(specs) + 1,
        run_id=run.run_id,
        vertex_stats=stats,
        table_rows=table_rows or {},
        staleness_counts=run.staleness_counts,
        crossings=run.crossings,
        backend=str(array_backend),
        spectra=(
            {key: [row[key] for row in spectra_rows] for key in SPECTRA_KEYS}
            if spectral_every
            else {}
        ),
    )
