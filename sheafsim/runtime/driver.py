"""Public entry point of the actor runtime: argument checks, run, result.

:func:`diffuse_on_actors` runs the heat equation of
:func:`sheafsim.dynamics.diffuse` with one Ray actor per sheaf vertex and a
coordinator actor that applies the stopping rule (arXiv:2603.14831). With the
synchronous schedule the actors compute exactly the in-process iterates, so the
final stalks and the number of steps match ``diffuse`` up to rounding. With the
asynchronous schedule every vertex steps on the latest messages it has.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import ray

from sheafsim._backend import to_numpy
from sheafsim._kernels import edge_discord, neural_residuals
from sheafsim.backend import ArrayBackend, check_tolerance, resolve_backend
from sheafsim.dynamics import (
    _apply_hard_pins,
    _check_steps,
    _positive,
    initial_state,
    network_on,
)
from sheafsim.errors import InvalidValueError
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import HardPin, ResolvedPin, SoftPin, resolve_pins
from sheafsim.recording import existing_tables
from sheafsim.runtime.coordinator import ReportRow, StoppingRule
from sheafsim.runtime.gpu import check_gpu_options, place_on_gpus
from sheafsim.runtime.local import LOCAL_INTEGRATORS
from sheafsim.runtime.metrics import ACTOR_TABLES, RecordSettings, pin_edge
from sheafsim.runtime.runner import ActorRun, ProgressCallback
from sheafsim.runtime.spec import (
    DelayModel,
    RunSettings,
    VertexSpec,
    neural_vertex_specs,
    static_edge_discord,
)
from sheafsim.stepsize import check_step_size

__all__ = ["diffuse_on_actors", "ActorRunResult", "SCHEDULES"]

logger = logging.getLogger(__name__)

SCHEDULES = ("sync", "async")


@dataclass
class ActorRunResult:
    """Outcome of :func:`diffuse_on_actors`.

    Attributes
    ----------
    status : str
        ``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"non_finite"``.
    steps : int
        Number of steps taken: the stopping step (synchronous schedule), or
        the max over vertices of the steps each took (asynchronous schedule).
    state : dict of vertex to ndarray
        Final stalks, each of shape ``(dim, batch)``: by vertex name, ``x``
        included, for a neural sheaf; by the sheaf's own vertices for a
        general sheaf.
    output : ndarray, shape (n_{k+1}, batch), or None
        ``y_out`` for sigmoid/softmax outputs, ``z{k+1}`` otherwise; None for
        a general sheaf (:func:`~sheafsim.runtime.general.diffuse_sheaf_on_actors`).
    max_update : float
        Max one-step change over all vertices at the last step. A converged
        asynchronous run gives the change at its final, quiescent state.
    wall_time_s : float
        Seconds from the start of the vertex loops to the coordinator's end of
        the run, without actor start-up and clean-up.
    n_actors : int
        Vertex actors plus the coordinator.
    schedule : str
        Message schedule, ``"sync"`` or ``"async"``.
    message : str
        Human-readable reason for the status.
    max_change_history : ndarray, shape (n,)
        Max one-step change over all vertices of steps ``1..n``. Synchronous:
        ``n == steps``. Asynchronous: over the vertices that reported step
        ``t``, up to the last reported step.
    energy_trace : dict of str to list
        ``"step"`` and ``"energy"``: sheaf energy at the evaluation point of the
        step after ``"step"``, recorded once per report interval. Asynchronous:
        from each vertex's latest terms, see
        :class:`~sheafsim.runtime.coordinator.RunEnd`.
    integrator : str
    startup_time_s : float
        Seconds spent starting the actors.
    vertex_stats : dict of str to dict
        Final counters of every vertex, static ones included: ``steps``,
        ``messages_sent``, ``messages_received`` and ``max_staleness`` (see
        :class:`~sheafsim.runtime.vertex.VertexCounters`).
    reports : list of ReportRow
        Every report the vertices sent the coordinator, in order of arrival.
    staleness_bound : int or None
        Staleness bound of an asynchronous run.
    quiescence_rounds : int
        Quiescence rounds the coordinator started (asynchronous schedule).
    run_id : str
        Identifier of the run; the actors are named ``sheafsim-<run_id>-*``.
    record_dir : str or None
        Run directory of the Parquet tables, if the run recorded them.
    table_rows : dict of str to int
        Rows written per table.
    final_energy : float
        Sheaf energy of the final state, computed on the driver.
    error_vs_exact : float or None
        Max absolute difference between the final stalks and the forward pass,
        which is the exact harmonic extension when nothing but ``x`` is
        pinned; None for runs with other pins.
    staleness_counts : dict of str to dict of int to int
        Steps taken by every stepping vertex, by the staleness of the messages
        each step used (max over edges of the vertex's step minus the message's
        tag). Under the synchronous schedule each vertex has only staleness 0.
        The values of a vertex sum to its ``vertex_stats`` steps.
    crossings : ndarray of int64, shape (n, 3)
        ReLU boundary crossings as rows ``(step, layer, count)``, sorted, rows
        with a count of 0 left out: ``count`` entries ``(neuron, sample)`` of
        the mask of layer ``layer`` differ between the mask step ``step`` used
        and the one step ``step + 1`` used. Under the synchronous schedule this
        is the ``crossings`` array of :func:`sheafsim.dynamics.diffuse`,
        counted per step and layer. Under the asynchronous schedule ``step`` is
        the step count of vertex ``z{layer}``. Empty for a general sheaf.
    backend : str
        Backend of the stepping vertex actors, as ``name/device/dtype``. The
        arrays of the result are host numpy float64 whatever the backend.
    """

    status: str
    steps: int
    state: dict[str, np.ndarray]
    output: np.ndarray | None
    max_update: float
    wall_time_s: float
    n_actors: int
    schedule: str
    message: str
    max_change_history: np.ndarray
    energy_trace: dict[str, list] = field(default_factory=dict)
    integrator: str = "euler"
    startup_time_s: float = 0.0
    vertex_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    reports: list[ReportRow] = field(default_factory=list)
    staleness_bound: int | None = None
    quiescence_rounds: int = 0
    run_id: str = ""
    record_dir: str | None = None
    table_rows: dict[str, int] = field(default_factory=dict)
    final_energy: float = float("nan")
    error_vs_exact: float | None = None
    staleness_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    crossings: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), dtype=np.int64)
    )
    backend: str = str(ArrayBackend())

    @property
    def converged(self) -> bool:
        """Whether the stopping rule was met."""
        return self.status == "converged"


def diffuse_on_actors(
    net: NeuralSheaf,
    x: Any,
    *,
    alpha: float = 1.0,
    dt: float = 0.01,
    tol: float = 1e-9,
    min_steps: int = 5,
    max_steps: int = 100_000,
    init: str | Mapping[str, Any] = "random",
    seed: int | None = 0,
    state: Mapping[str, Any] | None = None,
    pins: Sequence[HardPin] = (),
    soft_pins: Sequence[SoftPin] = (),
    pin_initial_state: bool = True,
    output_mode: Literal["jacobian", "identity"] = "jacobian",
    integrator: str = "euler",
    report_every: int = 10,
    window: int | None = None,
    schedule: str = "sync",
    check_step: bool = True,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 1.0,
    timeout_s: float | None = None,
    inject_fault: tuple[str, int] | None = None,
    staleness_bound: int | None = None,
    delays: DelayModel | None = None,
    convergence_window: int | None = None,
    record_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    overwrite: bool = False,
    flush_seconds: float = 1.0,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    gpus_per_actor: float | None = None,
) -> ActorRunResult:
    """Diffuse the neural sheaf with one Ray actor per vertex.

    The arguments shared with :func:`sheafsim.dynamics.diffuse` mean the same
    and are validated the same way, and the initial state for a given ``seed``
    is the same. Ray must be initialised by the caller; otherwise this calls
    ``ray.init(include_dashboard=False)``, which starts a local instance.

    The driver checks the arguments and builds the vertex specs with host
    numpy float64 arrays, whatever the arrays of ``net``, ``x`` and ``state``
    are: torch tensors are copied to the host first. Each stepping vertex
    actor then moves its stalk, maps and pins to ``backend`` once, when it
    starts. The arrays of the result are host numpy float64.

    Parameters
    ----------
    net : NeuralSheaf
        Network with numpy or torch weights.
    x : array_like or torch.Tensor, shape (n_0, batch)
        Input samples as columns; ``x`` is pinned.
    alpha, dt, tol, min_steps, max_steps, init, seed, state, pins, soft_pins, \
pin_initial_state, output_mode, check_step
        As in :func:`sheafsim.dynamics.diffuse`.
    integrator : {"euler", "nesterov"}
        Vertex-local integrator; ``"heavy_ball"`` has no actor version.
    report_every : int
        Steps between two reports of a vertex to the coordinator.
    window : int, optional
        Synchronous schedule: steps a vertex may run past the last step the
        coordinator has checked; default ``2 * report_every``. Must be at least
        ``report_every``. The asynchronous schedule does not use it.
    schedule : {"sync", "async"}
        ``"sync"``: step ``t + 1`` of every vertex uses its neighbours'
        step-``t`` messages. ``"async"``: every vertex steps on the latest
        messages it has received, also when no new message arrived (see
        :class:`~sheafsim.runtime.vertex.VertexActor` for when it waits). The
        run converges after a quiescence round confirms that, with no message
        in flight, every vertex's one-step change is below ``tol``. It ends
        with ``max_steps`` once a vertex has taken ``max_steps`` steps and
        every other one has too or waits for a new message. Each vertex
        returns its stalk at the end.
    progress : callable, optional
        Called on the driver as ``progress(step, max_change, elapsed_s)`` about
        every ``progress_interval_s`` seconds with the last checked step.
    progress_interval_s : float
        Seconds between two progress calls.
    timeout_s : float, optional
        Raise :class:`~sheafsim.errors.RuntimeFailure` if the run has not ended
        after this many seconds (actor start-up included).
    inject_fault : tuple of (str, int), optional
        ``(vertex, step)``: make that vertex actor raise after that step. Used
        to test the failure path.
    staleness_bound : int, optional
        Asynchronous schedule only: a vertex at step ``t`` uses messages tagged
        within ``t - B .. t + B`` and waits for one tagged at least ``t - B``
        (see :class:`~sheafsim.runtime.local.AsyncSchedule`). ``0`` reproduces
        the synchronous iterates. Default: no bound.
    delays : DelayModel, optional
        Seeded compute and message delays to inject; works with both
        schedules. Under the synchronous schedule the result is the same as
        without delays.
    convergence_window : int, optional
        Asynchronous schedule only: steps of every vertex whose one-step
        changes must all be below ``tol`` before a quiescence round starts.
        Default ``max(report_every, 10)``.
    record_dir : path, optional
        Run directory in which the coordinator streams ``convergence.parquet``,
        ``edges.parquet``, ``crossings.parquet``, ``vertices.parquet`` and
        ``staleness.parquet`` while the run goes on (see
        :mod:`sheafsim.runtime.metrics`). The coordinator runs on the driver's
        node, so the path is resolved there.
    run_id : str, optional
        Value of the tables' ``run_id`` column; default a random hex string.
    overwrite : bool
        Replace tables that ``record_dir`` already contains; otherwise they raise
        :class:`~sheafsim.errors.InvalidValueError` before any actor starts.
    flush_seconds : float
        Maximum time a metric row waits in the coordinator's memory.
    backend, device, dtype
        Array backend of the stepping vertex actors, resolved by
        :func:`sheafsim.backend.resolve_backend`: an
        :class:`~sheafsim.backend.ArrayBackend`, or ``"numpy"`` / ``"torch"``
        with a device (``"cpu"`` or ``"cuda"``) and a dtype (``"float64"`` or
        ``"float32"``). Default: numpy, CPU, float64. The backend is not taken
        from the arrays of ``net``. Static vertices (``x`` and fully pinned
        ones) compute on host numpy in the same dtype.
    gpus_per_actor : float, optional
        CUDA backends only: the share of one GPU in (0, 1] that Ray reserves
        for each stepping vertex actor. The default ``1 / n`` for ``n``
        stepping actors puts every actor on one GPU; ``0.25`` puts at most four
        on each GPU. Before any actor starts the driver checks that the Ray
        cluster has enough GPUs and that the actors sharing a GPU fit in its
        memory (:func:`~sheafsim.runtime.gpu.place_on_gpus`).

    Returns
    -------
    ActorRunResult

    Raises
    ------
    InvalidValueError, ShapeError, StepSizeError
        Invalid arguments, before any actor starts. A CUDA backend on a
        cluster without enough GPUs, or with actors whose estimated memory
        exceeds a GPU's, raises InvalidValueError before any actor starts too.
    RuntimeFailure
        A vertex actor or the coordinator failed or died (the message names the
        vertex), or the run timed out. Its ``reports`` attribute is the list of
        :class:`~sheafsim.runtime.coordinator.ReportRow` received before the
        failure, or None if the coordinator could not return it.
    """
    alpha = _positive("alpha", alpha)
    dt = _positive("dt", dt)
    tol = _positive("tol", tol)
    min_steps, max_steps = _check_steps(min_steps, max_steps)
    if output_mode not in ("jacobian", "identity"):
        raise InvalidValueError(
            f"unknown output_mode {output_mode!r}; use 'jacobian' or 'identity'"
        )
    options = _check_run_options(
        integrator,
        schedule,
        report_every,
        window,
        staleness_bound,
        convergence_window,
        delays,
        timeout_s,
        progress,
        progress_interval_s,
    )
    report_every, window, staleness_bound, convergence_window = options[:4]
    timeout_s, progress_interval_s = options[4:]
    array_backend = resolve_backend(backend, device, dtype)
    check_tolerance(array_backend.dtype, tol)
    check_gpu_options(array_backend, gpus_per_actor)
    record = _record_settings(net, record_dir, run_id, overwrite, flush_seconds)
    net = host_network(net)
    x = net.check_input(host_array(x))
    state = host_mapping(state)
    init = host_mapping(init)
    names = net.free_vertices
    if inject_fault is not None and inject_fault[0] not in names:
        raise InvalidValueError(
            f"inject_fault names vertex {inject_fault[0]!r}; use one of {names}"
        )
    unknown = [v for v in (delays.slowdown if delays else {}) if v not in names]
    if unknown:
        raise InvalidValueError(
            f"delays.slowdown names unknown vertices {unknown}; use free vertices "
            f"from {names}"
        )
    batch = x.shape[1]
    dims = {v: net.stalk_dim(v) for v in names}
    hard, soft = resolve_pins(pins, soft_pins, dims, batch, np, x)
    by_name = initial_state(net, x, state if state is not None else init, seed)
    values = [by_name[v] for v in names]
    if pin_initial_state:
        _apply_hard_pins(names, values, hard)
    if check_step:
        check_step_size(net, x, values, alpha, dt, output_mode, integrator)

    specs, static_changes, static_energy = neural_vertex_specs(
        net,
        x,
        dict(zip(names, values, strict=True)),
        hard,
        soft,
        output_mode,
        pin_initial_state,
    )
    if record is not None:
        record = _with_static_edges(record, specs)
    if delays is not None:
        seeds = delays.child_seeds(len(specs))
        for spec, delay_seed in zip(specs, seeds, strict=True):
            spec.delay_seed = delay_seed
    settings = RunSettings(
        step_size=alpha * dt,
        integrator=integrator,
        max_steps=max_steps,
        report_every=report_every,
        window=window,
        inject_fault=(
            None
            if inject_fault is None
            else (str(inject_fault[0]), int(inject_fault[1]))
        ),
        schedule=schedule,
        staleness_bound=staleness_bound,
        delays=delays,
        tol=tol,
        convergence_window=convergence_window,
        backend=array_backend,
    )
    layers = mask_layers(net)
    rule = StoppingRule(
        tol=tol,
        min_steps=min_steps,
        max_steps=max_steps,
        alpha=alpha,
        dt=dt,
        window=window,
        static_changes=static_changes,
        static_energy=static_energy,
        schedule=schedule,
        convergence_window=convergence_window,
        static_crossings=static_crossings(specs, layers),
    )
    if not ray.is_initialized():
        logger.info("Ray is not initialised; starting a local instance")
        ray.init(include_dashboard=False)
    share = place_on_gpus(specs, settings, gpus_per_actor)
    run = ActorRun(
        specs, settings, rule, record, mask_layers=layers, gpus_per_actor=share
    )
    try:
        end, final, stats, startup_s = run.execute(
            progress, progress_interval_s, timeout_s
        )
        steps = end.steps
        stepping = [spec.name for spec in specs if not spec.static]
        if schedule == "async" and stepping:
            steps = max(stats[name]["steps"] for name in stepping)
        energy, edges = _final_energy(net, x, final, soft)
        error = _error_vs_forward(net, x, final, hard, soft)
        table_rows = run.finalize_records(
            {
                "time_s": end.elapsed_s,
                "step": steps,
                "energy": energy,
                "max_update": float(end.max_update),
                "edges": edges,
                "error_vs_exact": error,
            },
            stats,
        )
    finally:
        run.kill_actors()

    output_vertex = "y_out" if net.has_output_vertex else f"z{net.depth + 1}"
    return ActorRunResult(
        status=end.status,
        steps=steps,
        state={v: final[v] for v in net.vertices},
        output=final[output_vertex],
        max_update=float(end.max_update),
        wall_time_s=end.elapsed_s,
        n_actors=len(specs) + 1,
        schedule=schedule,
        message=end.message,
        max_change_history=np.asarray(end.max_change_history, dtype=np.float64),
        energy_trace={"step": end.energy_steps, "energy": end.energy},
        integrator=integrator,
        startup_time_s=startup_s,
        vertex_stats=stats,
        reports=end.reports,
        staleness_bound=staleness_bound,
        quiescence_rounds=end.quiescence_rounds,
        run_id=run.run_id,
        record_dir=None if record is None else record.directory,
        table_rows=table_rows or {},
        final_energy=energy,
        error_vs_exact=error,
        staleness_counts=run.staleness_counts,
        crossings=run.crossings,
        backend=str(array_backend),
    )


def host_network(net: NeuralSheaf) -> NeuralSheaf:
    """Return ``net`` with host numpy float64 weights, copying it if needed."""
    return network_on(ArrayBackend(), net)


def host_array(value: Any) -> Any:
    """Return a torch tensor as a host numpy array and anything else unchanged."""
    return to_numpy(value) if hasattr(value, "detach") else value


def host_mapping(value: Any) -> Any:
    """Apply :func:`host_array` to every value of a mapping; return others unchanged."""
    if not isinstance(value, Mapping):
        return value
    return {key: host_array(item) for key, item in value.items()}


def mask_layers(net: NeuralSheaf) -> dict[str, int]:
    """Return the layer ``l`` of every pre-activation vertex ``z_l``, by name.

    ``z_l`` owns the activation-edge map ``diag(1[z_l >= 0])`` of layer ``l``,
    so its stalk decides that layer's ReLU mask.
    """
    return {
        info.upstream: info.layer for info in net.edges if info.kind == "activation"
    }


def static_crossings(
    specs: list[VertexSpec], layers: Mapping[str, int]
) -> tuple[tuple[int, int, int], ...]:
    """Return the crossing rows ``(step, layer, count)`` of static ``z_l`` vertices.

    A fully pinned ``z_l`` of a run that starts unpinned uses its unpinned
    stalk at step 1 and the pinned one from step 2 on, so its mask may change
    once, at step 1. Every other static vertex keeps its mask.
    """
    rows = []
    for spec in specs:
        if spec.name not in layers or spec.static_from != 1:
            continue
        assert spec.static_value is not None
        changed = int(np.count_nonzero((spec.value >= 0) != (spec.static_value >= 0)))
        if changed:
            rows.append((1, layers[spec.name], changed))
    return tuple(rows)


def _record_settings(
    net: NeuralSheaf,
    record_dir: str | os.PathLike[str] | None,
    run_id: str | None,
    overwrite: bool,
    flush_seconds: float,
) -> RecordSettings | None:
    """Check the recording options and return the coordinator's settings."""
    if record_dir is None:
        if run_id is not None:
            raise InvalidValueError(
                f"run_id={run_id!r} needs record_dir; give a run directory"
            )
        return None
    directory = os.path.abspath(os.fspath(record_dir))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InvalidValueError(
            f"record_dir {directory} exists and is not a directory; choose another"
        )
    existing = existing_tables(directory, ACTOR_TABLES)
    if existing and not overwrite:
        raise InvalidValueError(
            f"record_dir {directory} already contains the tables {existing}; pass "
            "overwrite=True or choose another directory"
        )
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise InvalidValueError(f"run_id={run_id!r} must be a non-empty string")
    flush_seconds = _positive("flush_seconds", flush_seconds)
    return RecordSettings(
        directory=directory,
        run_id=run_id or uuid.uuid4().hex[:8],
        edge_types={info.name: (info.kind, info.layer) for info in net.edges},
        flush_seconds=flush_seconds,
        overwrite=overwrite,
    )


def _with_static_edges(
    record: RecordSettings, specs: list[VertexSpec]
) -> RecordSettings:
    return replace(record, static_edges=static_edge_discord(specs))


def _final_energy(
    net: NeuralSheaf,
    x: np.ndarray,
    state: Mapping[str, np.ndarray],
    soft: list[ResolvedPin],
) -> tuple[float, dict[str, float]]:
    """Return the sheaf energy of ``state`` and the discord of every edge.

    Soft-pin penalties count as edges named ``pin:<vertex>``.
    """
    values = [state[v] for v in net.free_vertices]
    first = net.weights[0] @ x + net.biases[0]
    discord = edge_discord(np, net, neural_residuals(np, net, first, values))
    batch = x.shape[1]
    for pin in soft:
        gap = state[pin.vertex][pin.index] - pin.value
        name = pin_edge(pin.vertex)
        penalty = pin.gamma * float(np.sum(gap * gap)) / batch
        discord[name] = discord.get(name, 0.0) + penalty
    return 0.5 * sum(discord.values()), discord


def _error_vs_forward(
    net: NeuralSheaf,
    x: np.ndarray,
    state: Mapping[str, np.ndarray],
    hard: list[ResolvedPin],
    soft: list[ResolvedPin],
) -> float | None:
    """Return max |state - forward pass| over the free stalks, or None with pins."""
    if hard or soft:
        return None
    forward = net.forward(x)
    return max(
        float(np.max(np.abs(state[v] - forward.state[v]))) for v in net.free_vertices
    )


class _RunOptions(NamedTuple):
    report_every: int
    window: int
    staleness_bound: int | None
    convergence_window: int
    timeout_s: float | None
    progress_interval_s: float


def _check_run_options(
    integrator: str,
    schedule: str,
    report_every: int,
    window: int | None,
    staleness_bound: int | None,
    convergence_window: int | None,
    delays: DelayModel | None,
    timeout_s: float | None,
    progress: ProgressCallback | None,
    progress_interval_s: float,
) -> _RunOptions:
    """Validate the options shared by every actor run; fill in defaults."""
    if integrator not in LOCAL_INTEGRATORS:
        raise InvalidValueError(
            f"integrator {integrator!r} is not supported on actors; use one of "
            f"{list(LOCAL_INTEGRATORS)}"
        )
    if schedule not in SCHEDULES:
        raise InvalidValueError(
            f"unknown schedule {schedule!r}; use one of {list(SCHEDULES)}"
        )
    if int(report_every) < 1:
        raise InvalidValueError(f"report_every={report_every} must be >= 1")
    report_every = int(report_every)

    window = 2 * report_every if window is None else int(window)
    if window < report_every:
        raise InvalidValueError(
            f"window={window} is smaller than report_every={report_every}; the "
            "vertices would wait for a permit that never comes"
        )

    staleness_bound, convergence_window = _check_async_options(
        schedule, staleness_bound, convergence_window, report_every
    )
    if delays is not None and not isinstance(delays, DelayModel):
        raise InvalidValueError(
            f"delays must be a DelayModel or None, not {type(delays).__name__}"
        )
    if timeout_s is not None:
        timeout_s = _positive("timeout_s", timeout_s)
    if progress is not None:
        progress_interval_s = _positive("progress_interval_s", progress_interval_s)

    return _RunOptions(
        report_every,
        window,
        staleness_bound,
        convergence_window,
        timeout_s,
        progress_interval_s,
    )


def _check_async_options(
    schedule: str,
    staleness_bound: int | None,
    convergence_window: int | None,
    report_every: int,
) -> tuple[int | None, int]:
    """Validate the options of the asynchronous schedule.

    Returns the staleness bound and the convergence window with its default
    filled in.
    """
    if schedule != "async":
        for name, value in (
            ("staleness_bound", staleness_bound),
            ("convergence_window", convergence_window),
        ):
            if value is not None:
                raise InvalidValueError(
                    f"{name}={value} applies only to schedule='async'; drop it or "
                    "set schedule='async'"
                )
    if staleness_bound is not None:
        if int(staleness_bound) != staleness_bound or staleness_bound < 0:
            raise InvalidValueError(
                f"staleness_bound={staleness_bound} is invalid; use an integer "
                ">= 0, or None for no bound"
            )
        staleness_bound = int(staleness_bound)
    if convergence_window is None:
        return staleness_bound, max(report_every, 10)
    if int(convergence_window) != convergence_window or convergence_window < 1:
        raise InvalidValueError(
            f"convergence_window={convergence_window} is invalid; use an integer >= 1"
        )
    return staleness_bound, int(convergence_window)
