"""General cellular sheaves on Ray vertex actors.

:func:`diffuse_sheaf_on_actors` runs the heat equation of
:func:`sheafsim.diffuse_sheaf` with one Ray actor per vertex of a
:class:`~sheafsim.sheaf.CellularSheaf` and a coordinator actor that applies the
stopping rule. Each vertex actor stores its own restriction map ``F_{v◁e}`` of
every incident edge as a :class:`~sheafsim.runtime.maps.MatrixMap` and receives
``F_{u◁e} x_u`` from the neighbour ``u``, so its force is
``-sum_e F_{v◁e}^T (F_{v◁e} x_v - F_{u◁e} x_u)`` (Bosca and Ghrist,
arXiv:2603.14831).

Actor names and messages need strings, so vertex ``v`` runs as the actor of
``str(v)`` and edge ``(u, v)`` is named ``f"{u}-{v}"``. Sheaves whose vertex or
edge names collide as strings are rejected.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import ray

from sheafsim.backend import ArrayBackend, check_tolerance, resolve_backend
from sheafsim.dynamics import (
    _apply_hard_pins,
    _check_integrator,
    _check_steps,
    _positive,
)
from sheafsim.errors import InvalidValueError
from sheafsim.pins import HardPin, ResolvedPin, SoftPin, resolve_pins
from sheafsim.runtime.coordinator import StoppingRule
from sheafsim.runtime.driver import ActorRunResult, _check_run_options, host_array
from sheafsim.runtime.gpu import check_gpu_options, place_on_gpus
from sheafsim.runtime.maps import MatrixMap
from sheafsim.runtime.runner import ActorRun, ProgressCallback
from sheafsim.runtime.spec import DelayModel, EdgeEnd, RunSettings, VertexSpec
from sheafsim.sheaf import CellularSheaf
from sheafsim.sheaf_diffusion import (
    _check_sheaf_step_size,
    _edge_name,
    _initial_values,
)

__all__ = ["diffuse_sheaf_on_actors", "sheaf_vertex_specs", "actor_names"]

logger = logging.getLogger(__name__)

# The runner names the coordinator actor "sheafsim-<run id>-coordinator", the
# name a vertex called "coordinator" would get.
RESERVED_VERTEX_NAMES = ("coordinator",)


def actor_names(sheaf: CellularSheaf) -> dict[Hashable, str]:
    """Return the actor name ``str(v)`` of every vertex ``v`` of ``sheaf``.

    Raises
    ------
    InvalidValueError
        If two vertices have the same ``str``, a vertex is named
        ``"coordinator"``, or two edges get the same name ``f"{u}-{v}"``.
    """
    names = {vertex: str(vertex) for vertex in sheaf.vertices}
    by_name: dict[str, list[Hashable]] = {}
    for vertex, name in names.items():
        by_name.setdefault(name, []).append(vertex)
    collisions = [vertices for vertices in by_name.values() if len(vertices) > 1]
    if collisions:
        raise InvalidValueError(
            f"vertices {collisions[0]!r} all have the name "
            f"{str(collisions[0][0])!r} as strings, but every vertex actor needs "
            "a distinct name str(v). Relabel the graph (for example with "
            "networkx.relabel_nodes) so that the vertex names differ as strings"
        )
    for reserved in RESERVED_VERTEX_NAMES:
        if reserved in by_name:
            raise InvalidValueError(
                f"vertex {by_name[reserved][0]!r} has the name {reserved!r}, which "
                "the actor runtime reserves for the coordinator actor. Relabel "
                "that vertex"
            )
    edges_by_name: dict[str, list[tuple[Hashable, Hashable]]] = {}
    for edge in sheaf.edges:
        edges_by_name.setdefault(_edge_name(edge), []).append(edge)
    for name, edges in edges_by_name.items():
        if len(edges) > 1:
            raise InvalidValueError(
                f"edges {edges!r} all have the name {name!r}, because edge (u, v) "
                "is named f'{u}-{v}'. Relabel the vertices so that the edge names "
                "differ, for example with names that contain no '-'"
            )
    return names


def sheaf_vertex_specs(
    sheaf: CellularSheaf,
    values: Mapping[Hashable, np.ndarray],
    hard: list[ResolvedPin],
    soft: list[ResolvedPin],
) -> tuple[list[VertexSpec], float]:
    """Split a cellular sheaf with fixed restriction maps into vertex specs.

    A vertex is static when its hard pins cover its whole stalk, or when it
    has no edges and no soft pins, because its force is then zero. Each edge
    is reported by one stepping end: the head ``v`` of ``(u, v)`` if it steps,
    else the tail ``u`` if it steps.

    Parameters
    ----------
    sheaf : CellularSheaf
        Sheaf without state-dependent maps.
    values : mapping of vertex to ndarray
        Initial stalk of every vertex, shape (d_v, batch), hard pins written.
    hard, soft : list of ResolvedPin
        Pins from :func:`sheafsim.pins.resolve_pins`, by original vertex name.

    Returns
    -------
    specs : list of VertexSpec
        In the sheaf's vertex order, named ``str(v)``. Each vertex lists its
        edges in the sheaf's edge order, the order in which
        :meth:`~sheafsim.sheaf.CellularSheaf.local_forces` sums them.
    static_energy : float
        Discord of the edges whose two ends are both static; it never changes.
    """
    names = actor_names(sheaf)
    specs: dict[Hashable, VertexSpec] = {}
    for vertex in sheaf.vertices:
        value = values[vertex]
        spec = VertexSpec(
            names[vertex],
            value,
            hard_pins=[_for_actor(p, names) for p in hard if p.vertex == vertex],
            soft_pins=[_for_actor(p, names) for p in soft if p.vertex == vertex],
        )
        pinned = {int(i) for pin in spec.hard_pins for i in pin.index}
        isolated = sheaf.graph.degree(vertex) == 0
        if len(pinned) == sheaf.stalk_dim(vertex) or (isolated and not spec.soft_pins):
            spec.static_from, spec.static_value = 0, value
        specs[vertex] = spec

    static_energy = 0.0
    for edge in sheaf.edges:
        tail, head = edge
        tail_spec, head_spec = specs[tail], specs[head]
        tail_map = MatrixMap(sheaf.restriction(edge, tail))
        head_map = MatrixMap(sheaf.restriction(edge, head))
        head_reports = not head_spec.static
        tail_reports = not head_reports and not tail_spec.static
        name = _edge_name(edge)
        tail_spec.edges.append(
            EdgeEnd(
                name,
                names[head],
                tail_map,
                reports_energy=tail_reports,
                neighbour_static=head_spec.static,
            )
        )
        head_spec.edges.append(
            EdgeEnd(
                name,
                names[tail],
                head_map,
                reports_energy=head_reports,
                neighbour_static=tail_spec.static,
            )
        )
        if not (head_reports or tail_reports):
            assert tail_spec.static_value is not None
            assert head_spec.static_value is not None
            residual = head_map.apply(head_spec.static_value) - tail_map.apply(
                tail_spec.static_value
            )
            static_energy += float(np.sum(residual**2)) / residual.shape[1]
    return list(specs.values()), static_energy


def _for_actor(pin: ResolvedPin, names: Mapping[Hashable, str]) -> ResolvedPin:
    """Return ``pin`` with its vertex renamed to the actor name."""
    return dataclasses.replace(pin, vertex=names[pin.vertex])


def _check_fixed_maps(sheaf: Any) -> None:
    """Raise InvalidValueError unless ``sheaf`` is a sheaf with fixed maps only."""
    if not isinstance(sheaf, CellularSheaf):
        raise InvalidValueError(
            f"sheaf must be a CellularSheaf, got {type(sheaf).__name__}; run a "
            "NeuralSheaf with sheafsim.runtime.diffuse_on_actors"
        )
    if not sheaf.is_state_dependent:
        return
    callables = [
        (edge, vertex)
        for edge in sheaf.edges
        for vertex in edge
        if callable(sheaf._maps[(edge, vertex)])
    ]
    edge, vertex = callables[0]
    raise InvalidValueError(
        f"the restriction map on edge {edge!r} at vertex {vertex!r} is a callable "
        f"of the state ({len(callables)} such maps in all), but the actor runtime "
        "supports only fixed (dense or sparse) maps. Run this sheaf in process "
        "with sheafsim.diffuse_sheaf"
    )


def _slowdown_by_actor(delays: DelayModel, names: Mapping[Hashable, str]) -> DelayModel:
    """Return ``delays`` with its slowdown factors keyed by actor name."""
    unknown = [v for v in delays.slowdown if v not in names]
    if unknown:
        raise InvalidValueError(
            f"delays.slowdown names unknown vertices {unknown}; use vertices "
            f"from {list(names)}"
        )
    slowdown = {names[v]: factor for v, factor in delays.slowdown.items()}
    return dataclasses.replace(delays, slowdown=slowdown)


def diffuse_sheaf_on_actors(
    sheaf: CellularSheaf,
    state: Mapping[Hashable, Any],
    *,
    alpha: float = 1.0,
    dt: float = 0.1,
    tol: float = 1e-9,
    min_steps: int = 5,
    max_steps: int = 100_000,
    pins: Sequence[HardPin] = (),
    soft_pins: Sequence[SoftPin] = (),
    integrator: str = "euler",
    report_every: int = 10,
    window: int | None = None,
    schedule: str = "sync",
    staleness_bound: int | None = None,
    delays: DelayModel | None = None,
    convergence_window: int | None = None,
    check_step: bool = True,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 1.0,
    timeout_s: float | None = None,
    inject_fault: tuple[Hashable, int] | None = None,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    gpus_per_actor: float | None = None,
) -> ActorRunResult:
    """Diffuse a cellular sheaf with one Ray actor per vertex.

    The arguments shared with :func:`sheafsim.diffuse_sheaf` mean the same and
    are validated the same way, and so are those shared with
    :func:`sheafsim.runtime.diffuse_on_actors`. With ``schedule="sync"`` the
    actors compute the iterates of ``diffuse_sheaf`` with the same operations,
    so the final state and the number of steps are the same. Ray must be
    initialised by the caller; otherwise this calls
    ``ray.init(include_dashboard=False)``, which starts a local instance.

    Parameters
    ----------
    sheaf : CellularSheaf
        Sheaf with fixed (dense or scipy.sparse) restriction maps. ``str(v)``
        must differ between vertices and must not be ``"coordinator"``.
    state : mapping of vertex to array, shape (d_v, batch) or (d_v,)
        Initial value of every vertex.
    alpha, dt, tol, min_steps, max_steps, pins, soft_pins, check_step
        As in :func:`sheafsim.diffuse_sheaf`. A vertex whose stalk is hard-pinned
        in full is a static actor that sends its value once.
    integrator : {"euler", "nesterov"}
        Vertex-local integrator; ``"heavy_ball"`` has no actor version.
    report_every, window, schedule, staleness_bound, delays, \
convergence_window, progress, progress_interval_s, timeout_s
        As in :func:`sheafsim.runtime.diffuse_on_actors`. ``delays.slowdown``
        is keyed by vertex, as the sheaf names it.
    inject_fault : tuple of (vertex, int), optional
        ``(vertex, step)``: make the actor of that stepping vertex raise after
        that step. Used to test the failure path.
    backend, device, dtype, gpus_per_actor
        As in :func:`sheafsim.runtime.diffuse_on_actors`. Dense maps become
        arrays of the backend, and scipy.sparse maps sparse COO tensors on
        torch. The driver copies torch tensors in ``state`` to host numpy
        float64.

    Returns
    -------
    ActorRunResult
        ``state`` maps every vertex, as the sheaf names it, to its final stalk
        of shape (d_v, batch), and ``output`` is None. ``vertex_stats``,
        ``staleness_counts`` and ``reports`` name the vertices by ``str(v)``
        and the edges by ``f"{u}-{v}"``. ``crossings`` is empty.

    Raises
    ------
    InvalidValueError, ShapeError, StepSizeError
        Invalid arguments, before any actor starts.
    RuntimeFailure
        A vertex actor or the coordinator failed or died, or the run timed out
        (see :func:`sheafsim.runtime.diffuse_on_actors`).
    """
    alpha = _positive("alpha", alpha)
    dt = _positive("dt", dt)
    tol = _positive("tol", tol)
    min_steps, max_steps = _check_steps(min_steps, max_steps)
    _check_integrator(integrator)
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
    array_backend = resolve_backend(backend, device, dtype)
    check_tolerance(array_backend.dtype, tol)
    check_gpu_options(array_backend, gpus_per_actor)
    _check_fixed_maps(sheaf)
    names = actor_names(sheaf)
    if inject_fault is not None and inject_fault[0] not in names:
        raise InvalidValueError(
            f"inject_fault names vertex {inject_fault[0]!r}; use one of {list(names)}"
        )
    if delays is not None:
        delays = _slowdown_by_actor(delays, names)

    if isinstance(state, Mapping):
        state = {vertex: host_array(value) for vertex, value in state.items()}
    vertices, values = _initial_values(sheaf, state)
    batch = values[0].shape[1]
    dims = {v: sheaf.stalk_dim(v) for v in vertices}
    hard, soft = resolve_pins(pins, soft_pins, dims, batch, np, values[0])
    _apply_hard_pins(vertices, values, hard)  # type: ignore[arg-type]
    if check_step:
        _check_sheaf_step_size(
            sheaf, vertices, values, hard, alpha, dt, integrator, None
        )

    specs, static_energy = sheaf_vertex_specs(
        sheaf, dict(zip(vertices, values, strict=True)), hard, soft
    )
    stepping = [spec.name for spec in specs if not spec.static]
    fault: tuple[str, int] | None = None
    if inject_fault is not None:
        fault = (names[inject_fault[0]], int(inject_fault[1]))
        if fault[0] not in stepping:
            raise InvalidValueError(
                f"inject_fault names vertex {inject_fault[0]!r}, which takes no "
                "steps because it is hard-pinned in full or has no edges; name a "
                "stepping vertex"
            )
    if delays is not None:
        seeds = delays.child_seeds(len(specs))
        for spec, delay_seed in zip(specs, seeds, strict=True):
            spec.delay_seed = delay_seed

    settings = RunSettings(
        step_size=alpha * dt,
        integrator=integrator,
        max_steps=max_steps,
        report_every=options.report_every,
        window=options.window,
        inject_fault=fault,
        schedule=schedule,
        staleness_bound=options.staleness_bound,
        delays=delays,
        tol=tol,
        convergence_window=options.convergence_window,
        backend=array_backend,
    )
    rule = StoppingRule(
        tol=tol,
        min_steps=min_steps,
        max_steps=max_steps,
        alpha=alpha,
        dt=dt,
        window=options.window,
        static_energy=static_energy,
        schedule=schedule,
        convergence_window=options.convergence_window,
    )
    if not ray.is_initialized():
        logger.info("Ray is not initialised; starting a local instance")
        ray.init(include_dashboard=False)
    share = place_on_gpus(specs, settings, gpus_per_actor)
    run = ActorRun(specs, settings, rule, gpus_per_actor=share)
    try:
        end, final, stats, startup_s = run.execute(
            progress, options.progress_interval_s, options.timeout_s
        )
    finally:
        run.kill_actors()

    steps = end.steps
    if schedule == "async" and stepping:
        steps = max(stats[name]["steps"] for name in stepping)
    # Keyed by the sheaf's own vertices, which need not be strings.
    final_state: dict[Any, np.ndarray] = {v: final[names[v]] for v in vertices}
    return ActorRunResult(
        status=end.status,
        steps=steps,
        state=final_state,
        output=None,
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
        staleness_bound=options.staleness_bound,
        quiescence_rounds=end.quiescence_rounds,
        staleness_counts=run.staleness_counts,
        backend=str(array_backend),
    )
