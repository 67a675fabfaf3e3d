"""In-process sheaf heat equation on the neural sheaf, batched over samples.

The heat equation ``dc/dt = alpha * force(c)`` on the free stalks
``c = (z1, a1, ..., z{k+1}[, y_out])`` is the gradient flow of the sheaf energy
and converges exponentially to the forward pass from any start, even though the
ReLU masks switch along the way (arXiv:2603.14831). The paper integrates it with
forward Euler,

    c <- c + alpha * dt * force(c),

all forces and masks taken from the old state, and stops at the first step
whose largest absolute change of any free coordinate falls below ``tol``, once
at least ``min_steps`` steps were taken. Euler is stable for a fixed pattern iff
``alpha * dt < 2 / lambda_max(L_free)`` and its error decays like
``(1 - alpha * dt * lambda_min)^t``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sheafsim._backend import namespace, to_numpy
from sheafsim._kernels import edge_discord, neural_forces, neural_residuals
from sheafsim.backend import ArrayBackend, backend_of, check_tolerance, resolve_backend
from sheafsim.errors import ConvergenceError, InvalidValueError
from sheafsim.integrators import INTEGRATORS, make_integrator
from sheafsim.neural import NeuralSheaf, check_seed, state_from_mapping
from sheafsim.pins import HardPin, ResolvedPin, SoftPin, resolve_pins
from sheafsim.stepsize import check_step_size

__all__ = ["diffuse", "DiffusionResult", "STATUSES", "initial_state"]

logger = logging.getLogger(__name__)

STATUSES = ("converged", "max_steps", "diverged", "non_finite")

# A run is "diverged" once its one-step change exceeds this multiple of the
# largest of its first change and 1.
DIVERGENCE_FACTOR = 1e8


@dataclass
class DiffusionResult:
    """Outcome of :func:`diffuse`.

    Attributes
    ----------
    status : str
        ``"converged"``, ``"max_steps"``, ``"diverged"`` or ``"non_finite"``.
    steps : int
        Number of steps taken.
    state : dict of str to array
        Final stalks, ``x`` included, each of shape ``(dim, batch)``, as arrays
        of the run's backend (numpy arrays or torch tensors on its device).
    output : array, shape (n_{k+1}, batch)
        ``y_out`` for sigmoid/softmax outputs, ``z{k+1}`` otherwise; use
        :func:`sheafsim.backend.to_numpy` for a host copy.
    max_update : float
        Largest absolute change of a free coordinate in the last step.
    trace : dict of str to list
        ``"step"``, ``"energy"``, ``"discord"`` (total), ``"max_update"`` (the
        one-step change of that step; NaN at step 0) and one list per edge
        name, recorded every ``record_every`` steps and at ``record_at``.
    crossings : ndarray, shape (n_crossings, 4)
        ReLU boundary crossings as rows ``(step, layer, neuron, sample)``.
    wall_time_s : float
        Time spent in the integration loop.
    message : str
        Human-readable reason for the status.
    """

    status: str
    steps: int
    state: dict[Any, Any]
    output: Any
    max_update: float
    trace: dict[str, list]
    crossings: np.ndarray
    wall_time_s: float
    message: str = ""
    integrator: str = "euler"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether the stopping rule was met."""
        return self.status == "converged"


def initial_state(
    net: NeuralSheaf,
    x: Any,
    init: str | Mapping[str, Any] = "random",
    seed: int | None = 0,
) -> dict[str, Any]:
    """Build the initial free stalks.

    ``init`` is ``"random"`` (standard normal from ``seed``), ``"zeros"``,
    ``"forward_pass"``, or a mapping of every free vertex to a
    ``(dim, batch)`` array.
    """
    xp = namespace(x)
    batch = x.shape[1]
    if isinstance(init, Mapping):
        return state_from_mapping(net, init, batch)
    if init == "forward_pass":
        fp = net.forward(x)
        return {v: fp.state[v] + 0.0 for v in net.free_vertices}
    if init == "zeros":
        return {
            v: xp.zeros((net.stalk_dim(v), batch), dtype=x.dtype, device=_device(x))
            for v in net.free_vertices
        }
    if init == "random":
        rng = np.random.default_rng(seed)
        values = {}
        for v in net.free_vertices:
            draw = rng.standard_normal((net.stalk_dim(v), batch))
            values[v] = (
                draw.astype(x.dtype, copy=False)
                if xp is np
                else xp.asarray(draw, dtype=x.dtype, device=_device(x))
            )
        return values
    raise InvalidValueError(
        f"unknown init {init!r}; use 'random', 'zeros', 'forward_pass' or a "
        "mapping of vertex names to arrays"
    )


def run_backend(
    net: NeuralSheaf,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ArrayBackend | None:
    """Return the backend that the ``backend``, ``device`` and ``dtype`` options name.

    Returns None when all three are None, so the run stays on the backend of
    the network's weights. With ``backend`` None but a ``device`` or ``dtype``,
    the network's array library is kept and only the named fields change.
    Otherwise the options go through :func:`sheafsim.backend.resolve_backend`.
    """
    if backend is None and device is None and dtype is None:
        return None
    if backend is None:
        current = backend_of(net.weights[0])
        return ArrayBackend(
            current.name, device or current.device, dtype or current.dtype
        )
    return resolve_backend(backend, device, dtype)


def network_on(backend: ArrayBackend, net: NeuralSheaf) -> NeuralSheaf:
    """Return ``net`` when its arrays live on ``backend``, else a converted copy."""
    arrays = [*net.weights, *net.biases]
    if all(backend.matches(array) for array in arrays):
        return net
    return backend.network(net)


def _device(x: Any) -> Any:
    return getattr(x, "device", None) if not isinstance(x, np.ndarray) else None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidValueError(
            f"{name}={value!r} is invalid; {name} must be a positive number"
        )
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise InvalidValueError(f"{name}={value} is invalid; {name} must be positive")
    return value


def _check_integrator(integrator: str) -> None:
    if integrator not in INTEGRATORS:
        raise InvalidValueError(
            f"unknown integrator {integrator!r}; choose one of {sorted(INTEGRATORS)}"
        )


def _finish(result: DiffusionResult, raise_on_failure: bool) -> DiffusionResult:
    """Return ``result``, or raise ConvergenceError if asked and it failed."""
    if raise_on_failure and result.status != "converged":
        raise ConvergenceError(
            f"diffusion did not converge: {result.message}", status=result.status
        )
    return result


def _check_steps(min_steps: Any, max_steps: Any) -> tuple[int, int]:
    for name, value in (("min_steps", min_steps), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InvalidValueError(
                f"{name}={value!r} is invalid; {name} must be an integer"
            )
    # min_steps above max_steps is allowed: the run then ends at max_steps.
    if max_steps < 1 or min_steps < 0:
        raise InvalidValueError(
            f"max_steps={max_steps} and min_steps={min_steps} are invalid; need "
            "max_steps >= 1 and min_steps >= 0"
        )
    return int(min_steps), int(max_steps)


def _check_record_at(record_at: Iterable[int]) -> set[int]:
    steps = set()
    for step in record_at:
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise InvalidValueError(
                f"record_at contains {step!r}; give non-negative integer steps"
            )
        steps.add(int(step))
    return steps


def diffuse(
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
    momentum: float | None = None,
    record_every: int = 0,
    record_at: Iterable[int] = (),
    record_crossings: bool = True,
    check_step: bool = True,
    raise_on_failure: bool = False,
    progress: Callable[[int, float, float], None] | None = None,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> DiffusionResult:
    """Diffuse the neural sheaf from an initial state until it settles.

    Parameters
    ----------
    net : NeuralSheaf
    x : array_like, shape (n_0, batch)
        Input samples as columns; ``x`` is pinned.
    alpha, dt : float
        Diffusion rate and Euler step; one step moves ``c`` by
        ``alpha * dt * force``.
    tol : float
        Stop once the largest absolute one-step change of any free coordinate is
        below ``tol`` (after at least ``min_steps`` steps).
    max_steps : int
        Stop with status ``"max_steps"`` after this many steps.
    init : {"random", "zeros", "forward_pass"} or mapping
        Initial free stalks; ``state`` is an alias for a mapping.
    seed : int
        Seed of the random initial stalks.
    pins, soft_pins : sequences of HardPin, SoftPin
        Hard pins overwrite their coordinates after every step.
    pin_initial_state : bool
        Also apply the hard pins to the initial state (default). With False the
        first step starts from the unpinned state, as the reference
        implementation of arXiv:2603.14831 does.
    output_mode : {"jacobian", "identity"}
        Force of the output edge on ``z{k+1}`` for sigmoid/softmax outputs.
    integrator : str
        ``"euler"`` (the paper's scheme, default), ``"nesterov"`` or
        ``"heavy_ball"``; see :mod:`sheafsim.integrators`.
    momentum : float, optional
        Momentum coefficient of ``"heavy_ball"``.
    record_every : int
        Record energy and per-edge discord every this many steps (0: only at
        the start, the end and ``record_at``).
    record_at : iterable of int
        Extra steps at which to record.
    record_crossings : bool
        Record every ReLU mask change as ``(step, layer, neuron, sample)``.
    check_step : bool
        Estimate ``lambda_max`` of the free Laplacian at the initial pattern and
        raise :class:`~sheafsim.errors.StepSizeError` if ``alpha * dt`` exceeds
        the integrator's stability limit.
    raise_on_failure : bool
        Raise :class:`~sheafsim.errors.ConvergenceError` unless the run
        converged, instead of returning the status.
    progress : callable, optional
        Called as ``progress(step, max_change, elapsed_s)`` about once a second.
    backend : ArrayBackend or {"numpy", "torch"}, optional
        Array library to run on. The network, ``x`` and an initial state
        mapping are converted to it (the network passed in is not changed).
        Default: the backend of the network's weights.
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (torch only).
    dtype : {"float64", "float32"}, optional
        Precision of the stalks and maps. Without ``backend``, ``device`` and
        ``dtype`` change only that field of the network's backend.

    Returns
    -------
    DiffusionResult

    Raises
    ------
    InvalidValueError, ShapeError
        Invalid rates, counts, input, initial state, pins or backend, or a
        CUDA device that this process cannot use.
    StepSizeError
        With ``check_step``, when ``alpha * dt`` exceeds the stability limit.
    ConvergenceError
        With ``raise_on_failure``, when the run did not converge.
    """
    chosen = run_backend(net, backend, device, dtype)
    if chosen is not None:
        net = network_on(chosen, net)
        if chosen.name == "numpy":
            # check_input reads tensors through numpy, which fails on a GPU.
            x = to_numpy(x)
        if isinstance(init, Mapping):
            init = chosen.state(init)
        if state is not None:
            state = chosen.state(state)
    alpha = _positive("alpha", alpha)
    dt = _positive("dt", dt)
    tol = _positive("tol", tol)
    min_steps, max_steps = _check_steps(min_steps, max_steps)
    check_seed(seed)
    if state is not None and not (isinstance(init, str) and init == "random"):
        raise InvalidValueError(
            f"both init={init!r} and state were given; pass the initial stalks "
            "through one of them"
        )
    if isinstance(pins, HardPin):
        pins = [pins]
    if isinstance(soft_pins, SoftPin):
        soft_pins = [soft_pins]
    if output_mode not in ("jacobian", "identity"):
        raise InvalidValueError(
            f"unknown output_mode {output_mode!r}; use 'jacobian' or 'identity'"
        )
    _check_integrator(integrator)
    x = net.check_input(x)
    check_tolerance(x.dtype, tol)
    xp = namespace(x)
    batch = x.shape[1]
    names = net.free_vertices
    dims = {v: net.stalk_dim(v) for v in names}
    hard, soft = resolve_pins(pins, soft_pins, dims, batch, xp, x)
    values_by_name = initial_state(net, x, state if state is not None else init, seed)
    values = [values_by_name[v] for v in names]
    if pin_initial_state:
        _apply_hard_pins(names, values, hard)

    step_size = alpha * dt
    if check_step:
        check_step_size(
            net,
            x,
            values,
            alpha,
            dt,
            output_mode,
            integrator,
            momentum,
            soft_pin_gamma=max((pin.gamma for pin in soft), default=0.0),
        )

    system = _NeuralSystem(xp, net, x, names, hard, soft, output_mode)
    stepper = make_integrator(integrator, xp, values, step_size, momentum)
    recorder = _Recorder(system, record_every, _check_record_at(record_at))
    recorder.record(0, values)

    run = _integrate(
        system,
        stepper,
        values,
        recorder,
        tol=tol,
        min_steps=int(min_steps),
        max_steps=int(max_steps),
        advice=f"lower dt (now {dt}) or alpha (now {alpha})",
        pin_initial_state=pin_initial_state,
        record_crossings=record_crossings,
        progress=progress,
    )
    status, message, steps, values, max_change, crossing_array, wall = run

    final = {"x": x}
    final.update(dict(zip(names, values, strict=True)))
    output = final["y_out"] if net.has_output_vertex else final[f"z{net.depth + 1}"]
    result = DiffusionResult(
        status=status,
        steps=steps,
        state=final,
        output=output,
        max_update=float(max_change),
        trace=recorder.trace,
        crossings=crossing_array,
        wall_time_s=wall,
        message=message,
        integrator=integrator,
    )
    return _finish(result, raise_on_failure)


def _integrate(
    system: Any,
    stepper: Any,
    values: list[Any],
    recorder: _Recorder,
    *,
    tol: float,
    min_steps: int,
    max_steps: int,
    advice: str,
    pin_initial_state: bool,
    record_crossings: bool,
    progress: Callable[[int, float, float], None] | None = None,
) -> tuple[str, str, int, list[Any], float, np.ndarray, float]:
    """Run the integration loop with the stopping rule of :func:`diffuse`.

    Returns status, message, steps, final values, last max change, crossings
    and wall time.
    """
    xp, names, hard = system.xp, system.names, system.hard_pins
    status, message = "max_steps", f"reached max_steps={max_steps}"
    first_change = None
    crossings: list[np.ndarray] = []
    previous_masks = None
    steps = 0
    max_change = math.inf
    start = time.perf_counter()
    next_progress = start + 1.0
    for steps in range(1, max_steps + 1):
        previous = values
        values, max_change, masks = stepper.step(system, values)
        if not pin_initial_state and steps == 1:
            # The unpinned start served the first force evaluation only; pin the
            # old state too, because momentum integrators keep it.
            max_change = max(max_change, _pin_change(xp, names, values, hard))
            _apply_hard_pins(names, values, hard)
            _apply_hard_pins(names, previous, hard)
        if record_crossings:
            if previous_masks is not None:
                _collect_crossings(xp, steps - 1, previous_masks, masks, crossings)
            previous_masks = masks
        recorder.record(steps, values, change=max_change)
        if not math.isfinite(max_change):
            status = "non_finite"
            message = f"a stalk became NaN or infinite at step {steps}"
            break
        if first_change is None:
            first_change = max(max_change, 1.0)
        if max_change > DIVERGENCE_FACTOR * first_change:
            status = "diverged"
            message = (
                f"the one-step change grew to {max_change:.3g} at step {steps}; "
                + advice
            )
            break
        if steps >= min_steps and max_change < tol:
            status, message = "converged", f"max one-step change {max_change:.3g} < tol"
            break
        if progress is not None and steps % 50 == 0:
            now = time.perf_counter()
            if now >= next_progress:
                progress(steps, max_change, now - start)
                next_progress = now + 1.0
    wall = time.perf_counter() - start
    if record_crossings and status in ("converged", "max_steps"):
        final_masks = system.masks(values)
        if previous_masks is not None:
            _collect_crossings(xp, steps, previous_masks, final_masks, crossings)
    recorder.record(steps, values, force=True, change=max_change)
    logger.debug("diffusion ended: %s after %d steps", status, steps)
    crossing_array = (
        np.concatenate(crossings) if crossings else np.zeros((0, 4), dtype=np.int64)
    )
    return status, message, steps, values, max_change, crossing_array, wall


def _apply_hard_pins(
    names: list[str], values: list[Any], hard: list[ResolvedPin]
) -> None:
    position = {v: i for i, v in enumerate(names)}
    for pin in hard:
        i = position[pin.vertex]
        if pin.full:
            values[i] = pin.value + 0.0
        else:
            values[i][pin.index] = pin.value


def _pin_change(xp: Any, names: list[str], values: list[Any], hard: list) -> float:
    position = {v: i for i, v in enumerate(names)}
    gaps = [values[position[p.vertex]][p.index] - p.value for p in hard]
    return max((float(xp.max(xp.abs(g))) for g in gaps), default=0.0)


def _collect_crossings(
    xp: Any, step: int, before: list[Any], after: list[Any], out: list[np.ndarray]
) -> None:
    # A crossing at step t means the mask used at step t+1 differs from step t.
    for layer, (old, new) in enumerate(zip(before, after, strict=True), start=1):
        changed = to_numpy(old != new)
        if changed.any():
            neuron, sample = np.nonzero(changed)
            rows = np.empty((len(neuron), 4), dtype=np.int64)
            rows[:, 0] = step
            rows[:, 1] = layer
            rows[:, 2] = neuron
            rows[:, 3] = sample
            out.append(rows)


class _NeuralSystem:
    """Forces of the neural sheaf with hard and soft pins folded in."""

    def __init__(
        self,
        xp: Any,
        net: NeuralSheaf,
        x: Any,
        names: list[str],
        hard: list[ResolvedPin],
        soft: list[ResolvedPin],
        output_mode: str,
    ) -> None:
        self.xp = xp
        self.net = net
        self.names = names
        self.output_mode = output_mode
        self.first_affine = net.weights[0] @ x + net.biases[0]
        position = {v: i for i, v in enumerate(names)}
        self.hard = [(position[p.vertex], p) for p in hard]
        self.hard_pins = hard
        self.soft = [(position[p.vertex], p) for p in soft]
        self.last_masks: list[Any] = []

    def forces(self, values: list[Any]) -> list[Any]:
        res = neural_residuals(self.xp, self.net, self.first_affine, values)
        self.last_masks = res.masks
        forces = neural_forces(self.xp, self.net, res, self.output_mode)
        for i, pin in self.soft:
            rows = values[i][pin.index]
            forces[i][pin.index] -= pin.gamma * (rows - pin.value)
        for i, pin in self.hard:
            if pin.full:
                forces[i] = forces[i] * 0.0
            else:
                forces[i][pin.index] = 0.0
        return forces

    def masks(self, values: list[Any]) -> list[Any]:
        xp = self.xp
        return [
            xp.astype(values[2 * layer] >= 0, values[0].dtype)
            for layer in range(self.net.depth)
        ]

    def discord(self, values: list[Any]) -> tuple[dict[str, float], float]:
        """Per-edge discord and the energy, soft-pin penalties included."""
        xp = self.xp
        res = neural_residuals(xp, self.net, self.first_affine, values)
        per_edge = edge_discord(xp, self.net, res)
        batch = values[0].shape[1]
        penalty = 0.0
        for i, pin in self.soft:
            gap = values[i][pin.index] - pin.value
            penalty += pin.gamma * float(xp.sum(gap * gap)) / batch
        energy = 0.5 * (sum(per_edge.values()) + penalty)
        return per_edge, energy


class _Recorder:
    """Energy and discord trace at chosen steps."""

    def __init__(self, system: _NeuralSystem, every: int, at: set[int]) -> None:
        if int(every) < 0:
            raise InvalidValueError(f"record_every={every} must be >= 0")
        self.system = system
        self.every = int(every)
        self.at = at
        self.trace: dict[str, list] = {
            "step": [],
            "energy": [],
            "discord": [],
            "max_update": [],
        }
        self._last = -1

    def record(
        self,
        step: int,
        values: list[Any],
        force: bool = False,
        change: float = math.nan,
    ) -> None:
        due = step in self.at or (self.every and step % self.every == 0) or step == 0
        if not (due or force) or step == self._last:
            return
        per_edge, energy = self.system.discord(values)
        self.trace["step"].append(step)
        self.trace["energy"].append(energy)
        self.trace["discord"].append(sum(per_edge.values()))
        self.trace["max_update"].append(float(change))
        for name, value in per_edge.items():
            self.trace.setdefault(name, []).append(value)
        self._last = step
