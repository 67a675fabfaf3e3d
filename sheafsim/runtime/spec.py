"""Per-vertex descriptions of a sheaf, as shipped to the vertex actors.

:func:`neural_vertex_specs` splits a :class:`~sheafsim.neural.NeuralSheaf` into
one :class:`VertexSpec` per vertex. Each spec contains the vertex's own stalk, its
own side of every incident edge (the upstream end of affine edge ``l`` owns
``W_l`` and ``b_l``, ``z_l`` owns its ReLU mask map, ``z_{k+1}`` owns the
output map, and every downstream end is the identity), and the pins on its
coordinates (arXiv:2603.14831).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sheafsim.backend import ArrayBackend
from sheafsim.errors import InvalidValueError
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import ResolvedPin
from sheafsim.runtime.maps import (
    AffineMap,
    IdentityMap,
    OutputMap,
    ReluMaskMap,
    RestrictionMap,
    owned_array,
)

__all__ = [
    "EdgeEnd",
    "VertexSpec",
    "DelayModel",
    "RunSettings",
    "neural_vertex_specs",
    "static_edge_discord",
    "spec_on_backend",
]


@dataclass
class EdgeEnd:
    """A vertex's side of one incident edge.

    Attributes
    ----------
    edge : str
        Edge name, unique in the sheaf.
    neighbour : str
        Vertex at the other end.
    map : RestrictionMap
        This vertex's restriction map onto the edge.
    reports_energy : bool
        Whether this end reports the edge's discord ``|residual|^2 / batch``.
        Exactly one stepping end of each edge reports it.
    neighbour_static : bool
        Whether the neighbour is static; a static vertex needs no messages.
    trains : bool
        Whether this end learns its map (an :class:`AffineMap`) from the edge
        residual during training.
    """

    edge: str
    neighbour: str
    map: RestrictionMap
    reports_energy: bool = False
    neighbour_static: bool = False
    trains: bool = False


@dataclass
class VertexSpec:
    """Everything one vertex actor needs.

    Attributes
    ----------
    name : str
        Vertex name.
    value : array, shape (dim, batch)
        Initial stalk, with hard pins already written when the run pins the
        initial state. The driver builds specs with host numpy float64 arrays;
        the vertex actor moves them to its backend (:func:`spec_on_backend`).
    edges : list of EdgeEnd
        Incident edges, in the order in which their forces are summed.
    hard_pins, soft_pins : list of ResolvedPin
        Pins on this vertex's coordinates.
    pin_after_first_step : bool
        Write the hard pins after step 1 and count the gap in that step's change
        (runs that start from the unpinned state).
    static_from : int or None
        For a vertex that never moves, the first step from which
        ``static_value`` holds. It sends its restricted values once and takes no
        steps. None for a stepping vertex.
    static_value : ndarray or None
        Stalk of a static vertex from ``static_from`` on.
    delay_seed : numpy.random.SeedSequence or None
        Seed of this vertex's injected delays; None when the run injects none.
    """

    name: str
    value: Any
    edges: list[EdgeEnd] = field(default_factory=list)
    hard_pins: list[ResolvedPin] = field(default_factory=list)
    soft_pins: list[ResolvedPin] = field(default_factory=list)
    pin_after_first_step: bool = False
    static_from: int | None = None
    static_value: Any = None
    delay_seed: np.random.SeedSequence | None = None

    @property
    def static(self) -> bool:
        """Whether the vertex never moves."""
        return self.static_from is not None


@dataclass(frozen=True)
class DelayModel:
    """Seeded delays injected into an actor run, for studies of slow hardware.

    Every delay is drawn as ``mean * U(1 - jitter, 1 + jitter)`` from the
    generator of its vertex. The generators are the children of
    ``numpy.random.SeedSequence(seed).spawn(n_vertices)``, in vertex order, so
    the draws of each vertex repeat from run to run. Which step or message a
    draw lands on can still vary under the asynchronous schedule.

    Attributes
    ----------
    compute_s : float
        Mean extra seconds each step of each vertex takes. The vertex sleeps
        this long after computing a step and before sending its messages.
    message_s : float
        Mean latency of each message in seconds. A delayed message is sent by
        a separate task, so the vertex keeps stepping while it is on its way,
        and messages of one edge can arrive out of order.
    jitter : float
        Relative spread of the draws, in [0, 1]; 0 makes every delay its mean.
    slowdown : mapping of str to float
        Factor on ``compute_s`` per vertex name, e.g. ``{"a1": 5.0}``. It has
        no effect while ``compute_s`` is 0.
    seed : int
        Root seed of the draws.
    """

    compute_s: float = 0.0
    message_s: float = 0.0
    jitter: float = 0.5
    slowdown: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("compute_s", "message_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise InvalidValueError(
                    f"DelayModel.{name}={value} is invalid; it must be a finite "
                    "number of seconds >= 0"
                )
        if not 0.0 <= self.jitter <= 1.0:
            raise InvalidValueError(
                f"DelayModel.jitter={self.jitter} is invalid; use a value in [0, 1]"
            )
        for vertex, factor in self.slowdown.items():
            if not (math.isfinite(factor) and factor > 0.0):
                raise InvalidValueError(
                    f"DelayModel.slowdown[{vertex!r}]={factor} is invalid; it must "
                    "be a finite factor > 0"
                )

    def child_seeds(self, n_vertices: int) -> list[np.random.SeedSequence]:
        """Return the seed of each vertex's delays, in vertex order."""
        return np.random.SeedSequence(self.seed).spawn(n_vertices)


@dataclass(frozen=True)
class RunSettings:
    """Settings shared by every vertex actor of one run.

    Attributes
    ----------
    step_size : float
        ``h = alpha * dt``.
    integrator : str
        ``"euler"`` or ``"nesterov"``.
    max_steps : int
        No vertex takes more steps than this.
    report_every : int
        A vertex reports to the coordinator after every ``report_every`` steps
        and after step ``max_steps``.
    window : int
        Under the synchronous schedule, a vertex runs at most this many steps
        past the last step the coordinator has checked, and keeps that many
        past states, so it can return its state at the stopping step. The
        asynchronous schedule has no window.
    inject_fault : tuple of (str, int) or None
        ``(vertex, step)``: that vertex raises after taking that step. Used to
        test the failure path.
    schedule : {"sync", "async"}
        Message schedule, see :mod:`sheafsim.runtime.local`.
    staleness_bound : int or None
        Bound ``B`` of the asynchronous schedule; None for no bound.
    delays : DelayModel or None
        Injected delays; None for none.
    tol, convergence_window : float, int
        Asynchronous schedule without a staleness bound: a vertex whose last
        ``convergence_window`` one-step changes are all below ``tol`` waits for
        a new message.
    weight_rate : float
        Training: ``beta * dt``, the rate of the local weight steps; 0 for
        inference.
    epoch_steps : int
        Training: steps per epoch. A vertex that learns sends its maps with
        the report of every epoch's last step.
    backend : ArrayBackend
        Array library, device and precision of the stepping vertices' stalks,
        maps and pins. Static vertices compute on host numpy in the same
        precision, because they never step and hold no GPU.
    """

    step_size: float
    integrator: str
    max_steps: int
    report_every: int
    window: int
    inject_fault: tuple[str, int] | None = None
    schedule: str = "sync"
    staleness_bound: int | None = None
    delays: DelayModel | None = None
    tol: float = 0.0
    convergence_window: int = 10
    weight_rate: float = 0.0
    epoch_steps: int = 0
    backend: ArrayBackend = ArrayBackend()


def neural_vertex_specs(
    net: NeuralSheaf,
    x: np.ndarray,
    values: dict[str, np.ndarray],
    hard: list[ResolvedPin],
    soft: list[ResolvedPin],
    output_mode: str,
    pin_initial_state: bool,
) -> tuple[list[VertexSpec], dict[int, float], float]:
    """Split a neural sheaf into vertex specs.

    Parameters
    ----------
    net : NeuralSheaf
    x : ndarray, shape (n_0, batch)
        Input; the vertex ``x`` is static from step 0.
    values : dict of str to ndarray
        Initial free stalks, each (dim, batch), hard pins already applied when
        ``pin_initial_state`` is True.
    hard, soft : list of ResolvedPin
        Pins from :func:`sheafsim.pins.resolve_pins`.
    output_mode : {"jacobian", "identity"}
    pin_initial_state : bool

    Returns
    -------
    specs : list of VertexSpec
        In vertex order, ``x`` first.
    static_changes : dict of int to float
        Contribution of static vertices to the one-step change of a step: the
        gap closed when a fully pinned vertex is pinned after step 1.
    static_energy : float
        Discord of edges whose two ends are both static; it never changes.
    """
    specs = {"x": VertexSpec("x", x, static_from=0, static_value=x)}
    static_changes: dict[int, float] = {}
    for vertex in net.free_vertices:
        spec = VertexSpec(
            vertex,
            values[vertex],
            hard_pins=[p for p in hard if p.vertex == vertex],
            soft_pins=[p for p in soft if p.vertex == vertex],
            pin_after_first_step=not pin_initial_state,
        )
        full = next((p for p in spec.hard_pins if p.full), None)
        if full is not None and pin_initial_state:
            spec.static_from, spec.static_value = 0, spec.value
        elif full is not None:
            # Step 1 has no momentum yet, so a zero-force vertex stays where it
            # is and moves once, when the pin is written after step 1.
            pinned = full.value + 0.0
            spec.static_from, spec.static_value = 1, pinned
            gap = float(np.max(np.abs(spec.value[full.index] - full.value)))
            static_changes[1] = max(static_changes.get(1, 0.0), gap)
        specs[vertex] = spec

    static_energy = 0.0
    batch = x.shape[1]
    for info in net.edges:
        up_map, down_map = _neural_maps(net, info.kind, info.layer, output_mode)
        upstream, downstream = specs[info.upstream], specs[info.downstream]
        down_reports = not downstream.static
        up_reports = not down_reports and not upstream.static
        upstream.edges.append(
            EdgeEnd(
                info.name,
                info.downstream,
                up_map,
                reports_energy=up_reports,
                neighbour_static=downstream.static,
            )
        )
        downstream.edges.append(
            EdgeEnd(
                info.name,
                info.upstream,
                down_map,
                reports_energy=down_reports,
                neighbour_static=upstream.static,
            )
        )
        if not (down_reports or up_reports):
            assert upstream.static_value is not None
            assert downstream.static_value is not None
            residual = up_map.apply(upstream.static_value) - down_map.apply(
                downstream.static_value
            )
            static_energy += float(np.sum(residual**2)) / batch
    return list(specs.values()), static_changes, static_energy


def neural_training_specs(
    net: NeuralSheaf,
    x: np.ndarray,
    y: np.ndarray,
    values: dict[str, np.ndarray],
    hard: list[ResolvedPin],
    soft: list[ResolvedPin],
) -> tuple[list[VertexSpec], float]:
    """Split a neural sheaf into the vertex specs of training.

    The labels ``y`` are boundary data on the output edge, as in
    :class:`sheafsim.training.TrainingStep`: for a sigmoid or softmax output,
    ``y_out`` is static with value ``y`` and the output edge drops the output
    Jacobian; for an identity output, ``z{k+1}`` gets a soft pin of strength 1
    to ``y``, whose force is ``-(z - y)``. The upstream end of every affine edge
    learns its map, so ``x``, which owns ``W_1`` and ``b_1``, takes steps too,
    with a hard pin on its whole stalk.

    Returns
    -------
    specs : list of VertexSpec
        In vertex order, ``x`` first.
    static_energy : float
        Discord of edges whose two ends never move.
    """
    free = dict(values)
    hard = list(hard)
    soft = list(soft)
    top = f"z{net.depth + 1}"
    everything = np.arange(net.widths[-1])
    if net.has_output_vertex:
        free["y_out"] = y
        hard.append(ResolvedPin("y_out", everything, y, full=True))
    else:
        # First, because the in-process step adds the label force before pins.
        soft.insert(0, ResolvedPin(top, everything, y, gamma=1.0))
    specs, _, static_energy = neural_vertex_specs(
        net, x, free, hard, soft, "identity", True
    )
    first = specs[0]
    first.static_from, first.static_value = None, None
    inputs = np.arange(net.widths[0])
    first.hard_pins = [ResolvedPin("x", inputs, x, full=True)]
    for spec in specs:
        for end in spec.edges:
            if end.neighbour == "x":
                end.neighbour_static = False
            if isinstance(end.map, AffineMap):
                end.trains = True
    return specs, static_energy


def static_edge_discord(specs: list[VertexSpec]) -> dict[str, float]:
    """Return the discord ``|residual|^2 / batch`` of every edge between statics.

    Such an edge never changes, and no vertex reports it.
    """
    by_name = {spec.name: spec for spec in specs}
    discord: dict[str, float] = {}
    for spec in specs:
        if not spec.static:
            continue
        for end in spec.edges:
            other = by_name[end.neighbour]
            if not other.static or end.edge in discord:
                continue
            assert spec.static_value is not None and other.static_value is not None
            far = next(e for e in other.edges if e.edge == end.edge)
            residual = end.map.apply(spec.static_value) - far.map.apply(
                other.static_value
            )
            batch = residual.shape[1]
            discord[end.edge] = float(np.sum(residual**2)) / batch
    return discord


def spec_on_backend(spec: VertexSpec, backend: ArrayBackend) -> VertexSpec:
    """Return a copy of ``spec`` with its stalks, maps and pins on ``backend``.

    On the numpy float64 backend the arrays are the spec's own, so the actor
    computes exactly what it computed before backends existed.
    """
    edges = [
        dataclasses.replace(end, map=end.map.to_backend(backend)) for end in spec.edges
    ]
    static_value = spec.static_value
    if static_value is not None:
        static_value = owned_array(static_value, backend)
    return dataclasses.replace(
        spec,
        value=owned_array(spec.value, backend),
        edges=edges,
        hard_pins=[_pin_on_backend(pin, backend) for pin in spec.hard_pins],
        soft_pins=[_pin_on_backend(pin, backend) for pin in spec.soft_pins],
        static_value=static_value,
    )


def _pin_on_backend(pin: ResolvedPin, backend: ArrayBackend) -> ResolvedPin:
    """Return ``pin`` with its target and coordinate indices on ``backend``."""
    value = owned_array(pin.value, backend)
    index: Any = pin.index
    if backend.name == "torch":
        import torch

        index = torch.as_tensor(pin.index, dtype=torch.int64, device=backend.device)
    return dataclasses.replace(pin, index=index, value=value)


def _neural_maps(
    net: NeuralSheaf, kind: str, layer: int, output_mode: str
) -> tuple[RestrictionMap, RestrictionMap]:
    """Return the (upstream, downstream) restriction maps of one edge."""
    if kind == "affine":
        upstream: RestrictionMap = AffineMap(
            net.weights[layer - 1], net.biases[layer - 1]
        )
    elif kind == "activation":
        upstream = ReluMaskMap()
    else:
        upstream = OutputMap(net.output, output_mode)  # type: ignore[arg-type]
    return upstream, IdentityMap()
