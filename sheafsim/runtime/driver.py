"""Public entry point of the actor runtime: argument checks, run, result.

:func:`diffuse_on_actors` runs the heat equation of
:func:`sheafsim.dynamics.diffuse` with one Ray actor per sheaf vertex and a
coordinator actor that applies the stopping rule (arXiv:2603.14831). With the
synchronous schedule the actors compute exactly the in-process iterates, so the
final stalks and the number of steps match ``diffuse`` up to rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import ray

from sheafsim.dynamics import _apply_hard_pins, _positive, initial_state
from sheafsim.errors import InvalidValueError
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import HardPin, SoftPin, resolve_pins
from sheafsim.runtime.coordinator import StoppingRule
from sheafsim.runtime.local import LOCAL_INTEGRATORS
from sheafsim.runtime.runner import ActorRun, ProgressCallback
from sheafsim.runtime.spec import RunSettings, neural_vertex_specs
from sheafsim.stepsize import check_step_size

__all__ = ["diffuse_on_actors", "ActorRunResult", "SCHEDULES"]

logger = logging.getLogger(__name__)

SCHEDULES = ("sync",)


@dataclass
class ActorRunResult:
    """Outcome of :func:`diffuse_on_actors`.

    Attributes
    ----------
    status : str
        ``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"non_finite"``.
    steps : int
        Number of steps taken (the stopping step).
    state : dict of str to ndarray
        Final stalks, ``x`` included, each of shape ``(dim, batch)``.
    output : ndarray, shape (n_{k+1}, batch)
        ``y_out`` for sigmoid/softmax outputs, ``z{k+1}`` otherwise.
    max_update : float
        Max one-step change over all vertices at the last step.
    wall_time_s : float
        Seconds from the start of the vertex loops to the coordinator's end of
        the run, without actor start-up and clean-up.
    n_actors : int
        Vertex actors plus the coordinator.
    schedule : str
        Message schedule, ``"sync"``.
    message : str
        Human-readable reason for the status.
    max_change_history : ndarray, shape (steps,)
        Max one-step change over all vertices of steps ``1..steps``.
    energy_trace : dict of str to list
        ``"step"`` and ``"energy"``: sheaf energy at the evaluation point of the
        step after ``"step"``, recorded once per report interval.
    integrator : str
    startup_time_s : float
        Seconds spent starting the actors.
    """

    status: str
    steps: int
    state: dict[str, np.ndarray]
    output: np.ndarray
    max_update: float
    wall_time_s: float
    n_actors: int
    schedule: str
    message: str
    max_change_history: np.ndarray
    energy_trace: dict[str, list] = field(default_factory=dict)
    integrator: str = "euler"
    startup_time_s: float = 0.0

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
) -> ActorRunResult:
    """Diffuse the neural sheaf with one Ray actor per vertex.

    The arguments shared with :func:`sheafsim.dynamics.diffuse` mean the same
    and are validated the same way, and the initial state for a given ``seed``
    is the same. Ray must be initialised by the caller; otherwise this calls
    ``ray.init(include_dashboard=False)``, which starts a local instance.

    Parameters
    ----------
    net : NeuralSheaf
        Network with numpy weights.
    x : array_like, shape (n_0, batch)
        Input samples as columns; ``x`` is pinned.
    alpha, dt, tol, min_steps, max_steps, init, seed, state, pins, soft_pins, \
pin_initial_state, output_mode, check_step
        As in :func:`sheafsim.dynamics.diffuse`.
    integrator : {"euler", "nesterov"}
        Vertex-local integrator; ``"heavy_ball"`` has no actor version.
    report_every : int
        Steps between two reports of a vertex to the coordinator.
    window : int, optional
        Steps a vertex may run past the last step the coordinator has checked;
        default ``2 * report_every``. Must be at least ``report_every``.
    schedule : {"sync"}
        Step ``t + 1`` of every vertex uses its neighbours' step-``t`` messages.
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

    Returns
    -------
    ActorRunResult

    Raises
    ------
    InvalidValueError, ShapeError, StepSizeError
        Invalid arguments, before any actor starts.
    RuntimeFailure
        A vertex actor or the coordinator failed or died (the message names the
        vertex), or the run timed out.
    """
    alpha = _positive("alpha", alpha)
    dt = _positive("dt", dt)
    tol = _positive("tol", tol)
    if int(max_steps) < 1 or int(min_steps) < 0:
        raise InvalidValueError(
            f"max_steps={max_steps} and min_steps={min_steps} are invalid; need "
            "max_steps >= 1 and min_steps >= 0"
        )
    max_steps, min_steps = int(max_steps), int(min_steps)
    if output_mode not in ("jacobian", "identity"):
        raise InvalidValueError(
            f"unknown output_mode {output_mode!r}; use 'jacobian' or 'identity'"
        )
    if integrator not in LOCAL_INTEGRATORS:
        raise InvalidValueError(
            f"integrator {integrator!r} is not supported on actors; use one of "
            f"{list(LOCAL_INTEGRATORS)}"
        )
    if schedule not in SCHEDULES:
        raise InvalidValueError(
            f"unknown schedule {schedule!r}; only {list(SCHEDULES)} is implemented"
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
    if timeout_s is not None:
        timeout_s = _positive("timeout_s", timeout_s)
    if progress is not None:
        progress_interval_s = _positive("progress_interval_s", progress_interval_s)
    if not isinstance(net.weights[0], np.ndarray):
        raise InvalidValueError(
            "the actor runtime needs numpy weights; convert the network with "
            "net.to('numpy')"
        )
    x = net.check_input(x)
    names = net.free_vertices
    if inject_fault is not None and inject_fault[0] not in names:
        raise InvalidValueError(
            f"inject_fault names vertex {inject_fault[0]!r}; use one of {names}"
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
    )
    rule = StoppingRule(
        tol=tol,
        min_steps=min_steps,
        max_steps=max_steps,
        alpha=alpha,
        dt=dt,
        window=window,
        static_changes=static_changes,
        static_energy=static_energy,
    )
    if not ray.is_initialized():
        logger.info("Ray is not initialised; starting a local instance")
        ray.init(include_dashboard=False)
    run = ActorRun(specs, settings, rule)
    try:
        end, final, startup_s = run.execute(progress, progress_interval_s, timeout_s)
    finally:
        run.kill_actors()

    output_vertex = "y_out" if net.has_output_vertex else f"z{net.depth + 1}"
    return ActorRunResult(
        status=end.status,
        steps=end.steps,
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
    )
