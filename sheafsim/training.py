"""Training a neural sheaf by local discrepancy minimisation, without a backward pass.

Bosca and Ghrist (arXiv:2603.14831) train a ReLU network encoded as a sheaf by
one joint forward-Euler step of the stalks and the weights, all from the old
state. With the input ``x`` pinned and the labels ``y`` as boundary data on the
output edge, one step is

* stalks at rate ``alpha``: the heat forces of inference, except that the
  output force on ``z_{k+1}`` is ``-(phi(z_{k+1}) - y)`` for every output
  ``phi`` (no output Jacobian);
* weights at rate ``beta``, summed over the batch:
  ``W_l -= beta * dt * r_l a_{l-1}^T`` and ``b_l -= beta * dt * sum r_l``, with
  ``r_l = W_l a_{l-1} + b_l - z_l`` the residual of affine edge ``l``.

Each weight update uses only its own edge's residual and the upstream stalk.
Losses and accuracies come from the ordinary forward pass of the current
weights.

The step runs in the array namespace of the network's weights, so the same code
trains numpy arrays and torch tensors on the CPU or a CUDA device, in float64
or float32 (:class:`sheafsim.backend.ArrayBackend`). Losses, accuracies and
spectra are computed on host numpy copies in float64.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from sheafsim._backend import namespace, to_numpy
from sheafsim._kernels import neural_forces, neural_residuals
from sheafsim.backend import ArrayBackend, backend_of, resolve_backend
from sheafsim.datasets import check_count
from sheafsim.dynamics import _apply_hard_pins, _positive, initial_state, network_on
from sheafsim.errors import InvalidValueError
from sheafsim.losses import accuracy, loss_for_output, prepare_labels
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import HardPin, ResolvedPin, SoftPin, resolve_pins

__all__ = ["TrainingResult", "train", "default_dt", "TrainingStep"]

logger = logging.getLogger(__name__)

SPECTRA_KEYS = (
    "epoch",
    "step",
    "samples",
    "lambda_min_median",
    "lambda_min_q25",
    "lambda_min_q75",
    "lambda_max_median",
    "lambda_max_q25",
    "lambda_max_q75",
)
"""Keys of :attr:`TrainingResult.spectra` and columns of ``spectra.parquet``."""

HISTORY_KEYS = (
    "epoch",
    "step",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
)
"""Keys of :attr:`TrainingResult.history`, the columns of ``training.parquet``."""


def default_dt(net: NeuralSheaf) -> float:
    """Return the step of the paper's recipes: 0.005 for one hidden layer, else 0.01."""
    return 0.005 if net.depth <= 1 else 0.01


@dataclass
class TrainingResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    status : str
        ``"completed"`` after every epoch, or ``"diverged"`` when a stalk,
        weight or loss became NaN or infinite.
    net : NeuralSheaf
        The trained network (the input network is left unchanged), with its
        weights on the training backend: numpy arrays, or torch tensors on the
        training device. After a divergence: the weights at the end of the last
        finite epoch.
    history : dict of str to list
        One entry per evaluation, keys :data:`HISTORY_KEYS`: epoch 0 before
        training, then the end of every epoch (and every ``log_every`` steps
        inside an epoch when asked). Accuracies are None for regression, and
        test values None without test data.
    steps : int
        Joint steps taken.
    wall_time_s : float
        Seconds spent in the training steps, evaluations excluded.
    message : str
    state : dict of str to array or None
        Final free stalks on the training backend, when ``return_state`` was
        set.
    energy : list of float
        Sheaf energy (label edge and soft pins included) at every evaluation,
        as a mean over the training samples like the energy of the diffusion
        tables: :meth:`TrainingStep.energy` divided by ``n_train``.
    spectra : dict of str to list
        Keys :data:`SPECTRA_KEYS`, one entry per spectral evaluation (empty
        unless ``spectral_every`` was set).
    """

    status: str
    net: NeuralSheaf
    history: dict[str, list]
    steps: int
    wall_time_s: float
    message: str = ""
    state: dict[str, Any] | None = None
    energy: list[float] = field(default_factory=list)
    spectra: dict[str, list] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """Whether every epoch ran."""
        return self.status == "completed"


class TrainingStep:
    """The joint forward-Euler step of stalks and weights on one data batch.

    Every array (weights, ``x``, ``y``, stalks and pin targets) must live on
    one backend, and the step runs in the array namespace of ``x``.

    Parameters
    ----------
    net : NeuralSheaf
        Its weight and bias arrays are updated in place, so pass a copy.
    x : array, shape (n_0, batch)
    y : array, shape (n_{k+1}, batch)
        Labels, already checked by :func:`sheafsim.losses.prepare_labels`.
    alpha, beta, dt : float
    hard, soft : list of ResolvedPin
        Pins on the free stalks ``z1, a1, ..., z{k+1}``.
    """

    def __init__(
        self,
        net: NeuralSheaf,
        x: Any,
        y: Any,
        alpha: float,
        beta: float,
        dt: float,
        hard: Sequence[ResolvedPin] = (),
        soft: Sequence[ResolvedPin] = (),
    ) -> None:
        self.net = net
        self.x = x
        self.y = y
        self.xp = namespace(x)
        self.stalk_rate = alpha * dt
        self.weight_rate = beta * dt
        self.names = training_vertices(net)
        position = {v: i for i, v in enumerate(self.names)}
        self.hard = [(position[p.vertex], p) for p in hard]
        self.soft = [(position[p.vertex], p) for p in soft]

    def residuals_and_forces(self, values: list[Any]) -> tuple[Any, list]:
        """Return the edge residuals and the stalk forces at ``values``."""
        net, xp = self.net, self.xp
        first = net.weights[0] @ self.x + net.biases[0]
        if net.has_output_vertex:
            # The labels stand in the output vertex, so the output residual is
            # phi(z) - y, and the "identity" mode drops the output Jacobian.
            res = neural_residuals(xp, net, first, [*values, self.y])
            forces = neural_forces(xp, net, res, "identity")[:-1]
        else:
            res = neural_residuals(xp, net, first, values)
            forces = neural_forces(xp, net, res, "identity")
            forces[-1] = forces[-1] - (values[-1] - self.y)
        for i, pin in self.soft:
            forces[i][pin.index] -= pin.gamma * (values[i][pin.index] - pin.value)
        for i, pin in self.hard:
            if pin.full:
                forces[i] = forces[i] * 0.0
            else:
                forces[i][pin.index] = 0.0
        return res, forces

    def __call__(self, values: list[Any]) -> list[Any]:
        """Take one joint step; update the weights in place, return new stalks."""
        net, xp = self.net, self.xp
        res, forces = self.residuals_and_forces(values)
        rate = self.weight_rate
        for layer in range(net.depth + 1):
            upstream = self.x if layer == 0 else values[2 * layer - 1]
            residual = res.affine[layer]
            net.weights[layer] -= rate * (residual @ upstream.mT)
            net.biases[layer] -= rate * xp.sum(residual, axis=1, keepdims=True)
        step = self.stalk_rate
        return [v + step * f for v, f in zip(values, forces, strict=True)]

    def energy(self, values: list[Any]) -> float:
        """Return the sheaf energy, the label edge and soft pins included."""
        net, xp = self.net, self.xp
        first = net.weights[0] @ self.x + net.biases[0]
        if net.has_output_vertex:
            res = neural_residuals(xp, net, first, [*values, self.y])
            label = res.output
        else:
            res = neural_residuals(xp, net, first, values)
            label = values[-1] - self.y
        total = sum(float(xp.sum(r * r)) for r in res.affine)
        total += sum(float(xp.sum(s * s)) for s in res.activation)
        total += float(xp.sum(label * label))
        for i, pin in self.soft:
            gap = values[i][pin.index] - pin.value
            total += pin.gamma * float(xp.sum(gap * gap))
        return 0.5 * total


def training_vertices(net: NeuralSheaf) -> list[str]:
    """Return the free stalks of training: ``z1, a1, ..., z{k+1}`` (no ``y_out``)."""
    names = list(net.free_vertices)
    return names[:-1] if net.has_output_vertex else names


def _copy_net(net: NeuralSheaf, backend: ArrayBackend | None = None) -> NeuralSheaf:
    """Return a copy of ``net`` on ``backend`` (default: numpy float64)."""
    return (backend or ArrayBackend()).network(net)


def _copy_array(backend: ArrayBackend, value: Any) -> Any:
    """Return a copy of ``value`` on ``backend`` that shares no memory with it."""
    converted = backend.asarray(value)
    return converted.copy() if backend.name == "numpy" else converted.clone()


def _start_values(
    net: NeuralSheaf,
    x: Any,
    init: str | Mapping[str, Any],
    seed: int | None,
) -> list[Any]:
    """Return new initial stalks on the backend of ``net``'s weights."""
    backend = backend_of(net.weights[0])
    names = training_vertices(net)
    if isinstance(init, Mapping):
        missing = [v for v in names if v not in init]
        if missing:
            raise InvalidValueError(
                f"initial state is missing vertices {missing}; give every one of "
                f"{names}"
            )
        values = []
        for v in names:
            value = _copy_array(backend, init[v])
            expected = (net.stalk_dim(v), x.shape[1])
            if tuple(value.shape) != expected:
                raise InvalidValueError(
                    f"initial state of {v!r} has shape {tuple(value.shape)}; "
                    f"expected {expected}"
                )
            values.append(value)
        return values
    start = initial_state(net, backend.asarray(x), init, seed)
    return [_copy_array(backend, start[v]) for v in names]


def _evaluate(
    net: NeuralSheaf,
    data: list[tuple[Any, np.ndarray] | None],
    classification: bool,
) -> list[float | None]:
    """Return train loss, test loss, train accuracy and test accuracy.

    The features may live on the network's backend. The labels are host numpy
    arrays, and the loss is computed on a host copy of the prediction.
    """
    loss = loss_for_output(net.output)
    losses: list[float | None] = []
    accuracies: list[float | None] = []
    for pair in data:
        if pair is None:
            losses.append(None)
            accuracies.append(None)
            continue
        features, labels = pair
        prediction = to_numpy(net.forward(features).output)
        losses.append(float(loss(prediction, labels)))
        accuracies.append(
            float(accuracy(prediction, labels)) if classification else None
        )
    return [*losses, *accuracies]


def spectra_row(net: NeuralSheaf, x: Any, epoch: int, step: int) -> dict[str, Any]:
    """Median and quartiles of the extreme eigenvalues of ``net`` over ``x``.

    The eigenvalues are computed with numpy in float64 on host copies of the
    weights and inputs, whatever backend they live on.
    """
    from sheafsim.diagnostics import spectral_summary, spectrum

    host = ArrayBackend()
    report = spectrum(network_on(host, net), host.asarray(x))
    stats = spectral_summary(report.lambda_min, report.lambda_max)
    row: dict[str, Any] = {"epoch": epoch, "step": step, "samples": x.shape[1]}
    row.update({key: stats[key] for key in SPECTRA_KEYS[3:]})
    return row


def _positive_int(name: str, value: Any) -> int:
    return check_count(name, value, minimum=1)


def _training_backend(
    net: NeuralSheaf,
    backend: ArrayBackend | str | None,
    device: str | None,
    dtype: str | None,
) -> ArrayBackend:
    """Return the backend of a training run from the options of :func:`train`."""
    if backend is not None:
        return resolve_backend(backend, device, dtype)
    current = backend_of(net.weights[0])
    if current.name == "numpy":
        # numpy weights train in float64 unless a dtype is given.
        current = ArrayBackend()
    return ArrayBackend(current.name, device or current.device, dtype or current.dtype)


def _weights_finite(xp: Any, weights: list[Any]) -> bool:
    """Return whether the sum of every weight matrix is finite.

    The per-layer results are combined on the device, so a GPU run waits for
    one transfer per step, not one per layer.
    """
    finite = [xp.isfinite(xp.sum(w)) for w in weights]
    return bool(xp.all(xp.stack(finite)))


class TrainingInputs(NamedTuple):
    """Checked data and rates of a training run."""

    x: np.ndarray
    y: np.ndarray
    test: tuple[np.ndarray, np.ndarray] | None
    alpha: float
    beta: float
    dt: float
    epochs: int
    steps_per_epoch: int


def check_training_inputs(
    net: NeuralSheaf,
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    alpha: float,
    beta: float | None,
    dt: float | None,
    epochs: Any,
    steps_per_epoch: Any,
) -> TrainingInputs:
    """Check the data, labels, rates and counts of a run; fill in the defaults.

    Shared by :func:`train` and :func:`sheafsim.runtime.train_on_actors`. The
    returned inputs and labels are host numpy float64 arrays, whatever the
    backend of ``net``.
    """
    x = np.asarray(to_numpy(net.check_input(x)), dtype=np.float64)
    n_train = x.shape[1]
    y = prepare_labels(y, net.widths[-1], net.output, n_samples=n_train)
    if (x_test is None) != (y_test is None):
        raise InvalidValueError(
            "give both x_test and y_test, or neither; one of them is missing"
        )
    test = None
    if x_test is not None:
        features = np.asarray(to_numpy(net.check_input(x_test)), dtype=np.float64)
        labels = prepare_labels(
            y_test, net.widths[-1], net.output, n_samples=features.shape[1]
        )
        test = (features, labels)
    return TrainingInputs(
        x,
        y,
        test,
        _positive("alpha", alpha),
        _positive("beta", 1.0 / n_train if beta is None else beta),
        _positive("dt", default_dt(net) if dt is None else dt),
        _positive_int("epochs", epochs),
        _positive_int("steps_per_epoch", steps_per_epoch),
    )


def train(
    net: NeuralSheaf,
    x: Any,
    y: Any,
    *,
    alpha: float = 1.0,
    beta: float | None = None,
    dt: float | None = None,
    epochs: int = 100,
    steps_per_epoch: int = 1000,
    init: str | Mapping[str, Any] | None = None,
    reset_each_epoch: bool | None = None,
    seed: int | None = 0,
    x_test: Any = None,
    y_test: Any = None,
    log_every: int = 0,
    return_state: bool = False,
    pins: Sequence[HardPin] = (),
    soft_pins: Sequence[SoftPin] = (),
    progress: Callable[[int, int, float | None], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    spectral_every: int = 0,
    spectral_samples: int = 32,
    on_spectrum: Callable[[dict[str, Any]], None] | None = None,
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> TrainingResult:
    """Train ``net`` by the joint sheaf dynamics of stalks and weights.

    Parameters
    ----------
    net : NeuralSheaf
        Initial network; it is copied to the training backend, not modified.
    x : array_like, shape (n_0, n_train)
        Training inputs as columns.
    y : array_like
        Labels: shape ``(n_out, n_train)`` (or ``(n_train,)`` with one output);
        for softmax also integer classes of shape ``(n_train,)``.
    alpha, beta, dt : float
        Stalk rate, weight rate and time step. Defaults: ``beta = 1 / n_train``
        and :func:`default_dt`.
    epochs, steps_per_epoch : int
    init : {"random", "zeros", "forward_pass"} or mapping, optional
        Initial stalks. Default ``"forward_pass"`` when the stalks are reset
        every epoch, else ``"random"`` (standard normal from ``seed``).
    reset_each_epoch : bool, optional
        Reset the stalks to the forward pass of the current weights at the start
        of every epoch after the first. Default: True for sigmoid and softmax
        outputs (classification), False for identity outputs (regression, warm
        start across epochs).
    x_test, y_test : array_like, optional
        Test data, evaluated with the training data.
    log_every : int
        Also evaluate every ``log_every`` steps inside an epoch; 0 for only at
        epoch ends.
    return_state : bool
        Return the final stalks in :attr:`TrainingResult.state`.
    pins, soft_pins : sequences of HardPin, SoftPin
        Pins on the free stalks ``z1, a1, ..., z{k+1}``, as in inference.
    progress : callable, optional
        ``progress(epoch, step, train_loss)`` after every evaluation.
    on_record : callable, optional
        Receives every history row as a dict, as it is recorded (for example
        :meth:`sheafsim.recording.RunRecorder.training`).
    spectral_every : int
        Every this many steps (and before the first), eigendecompose the free
        Laplacian at the forward-pass pattern of the first ``spectral_samples``
        training inputs with the current weights, and record the median and
        quartiles of ``lambda_min`` and ``lambda_max`` in
        :attr:`TrainingResult.spectra`. 0 (default) turns this off.
    spectral_samples : int
        Inputs used for the spectra.
    on_spectrum : callable, optional
        Receives every spectra row as a dict, with the keys of
        :data:`SPECTRA_KEYS`.
    backend : ArrayBackend or {"numpy", "torch"}, optional
        Array library of the weights, stalks and data during training.
        Default: numpy float64 for a network with numpy weights (float32
        numpy weights are trained in float64), else the backend of the
        network's weights.
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (torch only).
    dtype : {"float64", "float32"}, optional
        Precision of the training. Without ``backend``, ``device`` and
        ``dtype`` change only that field of the default backend.

    Returns
    -------
    TrainingResult

    Raises
    ------
    InvalidValueError, ShapeError
        Bad rates, counts, labels, initial state or backend, or a CUDA device
        that this process cannot use.
    """
    if not isinstance(net, NeuralSheaf):
        raise InvalidValueError(
            f"net must be a NeuralSheaf, got {type(net).__name__}; build one with "
            "NeuralSheaf.random or NeuralSheaf.from_sklearn"
        )
    chosen = _training_backend(net, backend, device, dtype)
    trained = _copy_net(net, chosen)
    inputs = check_training_inputs(
        trained, x, y, x_test, y_test, alpha, beta, dt, epochs, steps_per_epoch
    )
    x, y, test = inputs.x, inputs.y, inputs.test
    alpha, beta, dt = inputs.alpha, inputs.beta, inputs.dt
    epochs, steps_per_epoch = inputs.epochs, inputs.steps_per_epoch
    n_train = x.shape[1]
    if (
        isinstance(log_every, bool)
        or not isinstance(log_every, int | np.integer)
        or log_every < 0
    ):
        raise InvalidValueError(
            f"log_every={log_every!r} is invalid; use an integer >= 0 (0 logs "
            "only at epoch ends)"
        )
    spectral_every = check_count("spectral_every", spectral_every, minimum=0)
    spectral_samples = check_count("spectral_samples", spectral_samples, minimum=1)
    classification = net.output != "identity"
    if reset_each_epoch is None:
        reset_each_epoch = classification
    if init is None:
        init = "forward_pass" if reset_each_epoch else "random"

    # The step works on backend copies, while losses and spectra use the host
    # arrays.
    x_run, y_run = chosen.asarray(x), chosen.asarray(y)
    data: list[tuple[Any, np.ndarray] | None] = [(x_run, y)]
    data.append(None if test is None else (chosen.asarray(test[0]), test[1]))
    xp = namespace(x_run)
    names = training_vertices(trained)
    dims = {v: trained.stalk_dim(v) for v in names}
    hard, soft = resolve_pins(pins, soft_pins, dims, n_train, xp, x_run)
    values = _start_values(trained, x_run, init, seed)
    _apply_hard_pins(names, values, hard)
    stepper = TrainingStep(trained, x_run, y_run, alpha, beta, dt, hard, soft)

    history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
    energy: list[float] = []

    def record(epoch: int, step: int) -> float | None:
        scores = _evaluate(trained, data, classification)
        row = dict(zip(HISTORY_KEYS, [epoch, step, *scores], strict=True))
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        energy.append(stepper.energy(values) / n_train)
        if on_record is not None:
            on_record(row)
        if progress is not None:
            progress(epoch, step, row["train_loss"])
        return row["train_loss"]

    spectra: dict[str, list] = (
        {key: [] for key in SPECTRA_KEYS} if spectral_every else {}
    )
    spectral_x = x[:, :spectral_samples]

    def record_spectrum(epoch: int, step: int) -> None:
        row = spectra_row(trained, spectral_x, epoch, step)
        for key in SPECTRA_KEYS:
            spectra[key].append(row[key])
        if on_spectrum is not None:
            on_spectrum(row)

    record(0, 0)
    if spectral_every:
        record_spectrum(0, 0)
    steps = 0
    wall = 0.0
    status, message = "completed", f"trained {epochs} epochs of {steps_per_epoch} steps"
    last_good = _copy_net(trained, chosen)
    # Overflow is reported as a divergence, not as a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(1, epochs + 1):
            if reset_each_epoch and epoch > 1:
                values = _start_values(trained, x_run, "forward_pass", seed)
                _apply_hard_pins(names, values, hard)
            start = time.perf_counter()
            failed_at = None
            for inner in range(1, steps_per_epoch + 1):
                values = stepper(values)
                steps += 1
                # A NaN in a stalk reaches every weight it touches in the next step,
                # so checking the small weight matrices catches it within one step.
                if not _weights_finite(xp, trained.weights):
                    failed_at = steps
                    break
                if spectral_every and steps % spectral_every == 0:
                    wall += time.perf_counter() - start
                    record_spectrum(epoch, steps)
                    start = time.perf_counter()
                if log_every and inner % log_every == 0 and inner < steps_per_epoch:
                    wall += time.perf_counter() - start
                    loss = record(epoch, steps)
                    start = time.perf_counter()
                    if loss is not None and not math.isfinite(loss):
                        failed_at = steps
                        break
            wall += time.perf_counter() - start
            if failed_at is None:
                loss = record(epoch, steps)
                if loss is not None and not math.isfinite(loss):
                    failed_at = steps
            if failed_at is not None:
                status = "diverged"
                message = (
                    f"stalks, weights or loss became NaN or infinite at step "
                    f"{failed_at} (epoch {epoch}); lower beta*n_train (now "
                    f"{beta * n_train:.4g}) or dt (now {dt:.4g})"
                )
                logger.warning("training diverged: %s", message)
                trained = last_good
                break
            last_good = _copy_net(trained, chosen)
    result = TrainingResult(
        status=status,
        net=trained,
        history=history,
        steps=steps,
        wall_time_s=wall,
        message=message,
        energy=energy,
        spectra=spectra,
    )
    if return_state:
        result.state = dict(zip(names, values, strict=True))
    return result
