"""Diagnostics of the neural sheaf: edge discord, pinned discord and spectra.

Bosca and Ghrist (arXiv:2603.14831) read a network through its sheaf in three
ways, all implemented here:

* :func:`discord` splits the sheaf energy of a state over the edges. The
  discord of an edge is the mean over the batch of its squared residual norm.
  It is summed by layer (affine ``l`` + activation ``l``, the output edge in layer
  ``k + 1``), by edge type, or in total (``2 E``, zero at the forward pass).
* :func:`pinned_discord` starts at the forward pass, hard-pins the output to
  the labels and diffuses. The discord left on each edge shows where in the
  network the prediction error sits. It runs in process or on vertex actors.
* :func:`spectrum` eigendecomposes the free Laplacian at the forward-pass
  activation pattern of each input: ``lambda_min`` sets the convergence rate of
  the heat equation, ``lambda_max`` the largest stable step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from sheafsim._backend import to_numpy
from sheafsim._kernels import Residuals, neural_residuals
from sheafsim.certificates import DENSE_EIGEN_LIMIT, free_laplacian
from sheafsim.dynamics import diffuse
from sheafsim.errors import InvalidValueError
from sheafsim.integrators import stability_limit
from sheafsim.losses import prepare_labels
from sheafsim.neural import NeuralSheaf
from sheafsim.pins import HardPin
from sheafsim.stepsize import estimate_lambda_max

__all__ = [
    "DiscordReport",
    "discord",
    "PinnedDiscordResult",
    "pinned_discord",
    "as_network",
    "SpectralReport",
    "spectrum",
    "spectral_summary",
]

EDGE_TYPE_ORDER = ("affine", "activation", "output")


# ---------------------------------------------------------------------------
# Discord of a state
# ---------------------------------------------------------------------------


@dataclass
class DiscordReport:
    """Per-edge residuals of one state of the neural sheaf.

    Attributes
    ----------
    per_edge : dict of str to float
        Discord of every edge (mean over the batch of ``|residual|^2``), in the
        order affine 1, activation 1, ..., affine k+1, output.
    by_layer : dict of int to float
        Affine ``l`` plus activation ``l``; the output edge counts to ``k + 1``.
    by_type : dict of str to float
        Sums over ``"affine"``, ``"activation"`` and (with a sigmoid or softmax
        output) ``"output"`` edges.
    total : float
        Sum over all edges, twice the sheaf energy of the state.
    residuals : dict of str to ndarray
        Residual of every edge, shape ``(dim, batch)``: upstream image minus
        downstream value (``W_l a_{l-1} + b_l - z_l``, ``R_l z_l - a_l``,
        ``phi(z_{k+1}) - y_out``).
    upstream, downstream : dict of str to ndarray
        The two sides of every edge, so ``residual = upstream - downstream``.
    pre_activation : dict of str to ndarray
        ``z_l`` of the layer of each edge (``z_{k+1}`` for the output edge).
    edge_types, edge_layers : dict
        Type and layer of every edge, by name.
    """

    per_edge: dict[str, float]
    by_layer: dict[int, float]
    by_type: dict[str, float]
    total: float
    residuals: dict[str, np.ndarray] = field(repr=False)
    upstream: dict[str, np.ndarray] = field(repr=False)
    downstream: dict[str, np.ndarray] = field(repr=False)
    pre_activation: dict[str, np.ndarray] = field(repr=False)
    edge_types: dict[str, str] = field(repr=False)
    edge_layers: dict[str, int] = field(repr=False)

    @property
    def energy(self) -> float:
        """Sheaf energy ``E = total / 2`` of the state."""
        return 0.5 * self.total

    def per_sample(self) -> dict[str, np.ndarray]:
        """Squared residual norm of every edge for every sample, shape ``(batch,)``."""
        return {name: np.sum(r * r, axis=0) for name, r in self.residuals.items()}

    def table(self) -> pa.Table:
        """Return one row per edge: ``edge``, ``edge_type``, ``layer``, ``discord``."""
        names = list(self.per_edge)
        return pa.table(
            {
                "edge": pa.array(names, pa.string()),
                "edge_type": pa.array([self.edge_types[n] for n in names]),
                "layer": pa.array([self.edge_layers[n] for n in names], pa.int64()),
                "discord": pa.array([self.per_edge[n] for n in names], pa.float64()),
            }
        )

    def coordinates(self, edges: list[str] | None = None) -> pa.Table:
        """Per-coordinate data of every edge, one row per (coordinate, sample).

        Columns: ``edge``, ``edge_type``, ``layer``, ``coordinate``,
        ``sample``, ``upstream`` (the image of the upstream stalk under the
        edge's map), ``downstream`` (the downstream stalk), ``residual``
        (their difference), ``z`` (the pre-activation of the layer) and
        ``active`` (``z >= 0``; null for the affine edge of the last layer and
        the output edge, which have no ReLU).

        Parameters
        ----------
        edges : list of str, optional
            Edge names to include; all by default.
        """
        names = list(self.residuals) if edges is None else list(edges)
        unknown = [name for name in names if name not in self.residuals]
        if unknown:
            raise InvalidValueError(
                f"unknown edges {unknown}; use names from {list(self.residuals)}"
            )
        depth = max(self.edge_layers.values()) - 1
        columns: dict[str, list[Any]] = {
            "edge": [],
            "edge_type": [],
            "layer": [],
            "coordinate": [],
            "sample": [],
            "upstream": [],
            "downstream": [],
            "residual": [],
            "z": [],
            "active": [],
        }
        for name in names:
            residual = self.residuals[name]
            dim, batch = residual.shape
            layer = self.edge_layers[name]
            z = self.pre_activation[name]
            count = dim * batch
            columns["edge"].append(np.full(count, name, dtype=object))
            columns["edge_type"].append(
                np.full(count, self.edge_types[name], dtype=object)
            )
            columns["layer"].append(np.full(count, layer, dtype=np.int64))
            columns["coordinate"].append(np.repeat(np.arange(dim), batch))
            columns["sample"].append(np.tile(np.arange(batch), dim))
            columns["upstream"].append(self.upstream[name].reshape(-1))
            columns["downstream"].append(self.downstream[name].reshape(-1))
            columns["residual"].append(residual.reshape(-1))
            columns["z"].append(z.reshape(-1))
            if layer <= depth:
                columns["active"].append((z >= 0).reshape(-1).astype(object))
            else:
                columns["active"].append(np.full(count, None, dtype=object))
        types = {
            "edge": pa.string(),
            "edge_type": pa.string(),
            "layer": pa.int64(),
            "coordinate": pa.int64(),
            "sample": pa.int64(),
            "upstream": pa.float64(),
            "downstream": pa.float64(),
            "residual": pa.float64(),
            "z": pa.float64(),
            "active": pa.bool_(),
        }
        return pa.table(
            {
                key: pa.array(
                    np.concatenate(parts) if parts else np.zeros(0), type=types[key]
                )
                for key, parts in columns.items()
            }
        )


def _state_values(net: NeuralSheaf, x: np.ndarray, state: Any) -> list[np.ndarray]:
    """Free stalks of ``state`` (a mapping or a result with ``.state``) in order."""
    if state is None:
        forward = net.forward(x).state
        return [np.asarray(forward[v], dtype=np.float64) for v in net.free_vertices]
    if not isinstance(state, Mapping):
        inner = getattr(state, "state", None)
        if not isinstance(inner, Mapping):
            raise InvalidValueError(
                f"state must be a mapping of vertex names to arrays or a result "
                f"with a .state mapping, got {type(state).__name__}"
            )
        state = inner
    batch = x.shape[1]
    values = []
    for vertex in net.free_vertices:
        if vertex not in state:
            raise InvalidValueError(
                f"state has no stalk for vertex {vertex!r}; give every free vertex "
                f"of {net.free_vertices}"
            )
        value = np.asarray(to_numpy(state[vertex]), dtype=np.float64)
        expected = (net.stalk_dim(vertex), batch)
        if value.shape != expected:
            raise InvalidValueError(
                f"stalk of {vertex!r} has shape {value.shape}; expected {expected} "
                f"for {batch} input columns"
            )
        values.append(value)
    return values


def discord(net: Any, x: Any, state: Any = None) -> DiscordReport:
    """Split the sheaf energy of a state over the edges of the network.

    Parameters
    ----------
    net : NeuralSheaf or trained model
        Anything :func:`as_network` accepts.
    x : array_like, shape (n_0, batch)
        Inputs, as columns.
    state : mapping or result, optional
        Free stalks ``z1, a1, ..., z{k+1}[, y_out]`` of shape ``(dim, batch)``
        (extra keys such as ``x`` are ignored), or a
        :class:`~sheafsim.dynamics.DiffusionResult` or actor result whose
        ``.state`` contains them. Default: the forward pass, where every discord
        is 0.

    Returns
    -------
    DiscordReport

    Examples
    --------
    >>> import numpy as np, sheafsim as ss
    >>> net = ss.NeuralSheaf.random([2, 4, 1], seed=0)
    >>> x = np.ones((2, 3))
    >>> ss.diagnostics.discord(net, x).total
    0.0
    """
    net = as_network(net)
    x = np.asarray(to_numpy(net.check_input(x)), dtype=np.float64)
    values = _state_values(net, x, state)
    first = net.weights[0] @ x + net.biases[0]
    res = neural_residuals(np, net, first, values)
    return _report(net, x, values, res)


def _report(
    net: NeuralSheaf, x: np.ndarray, values: list[np.ndarray], res: Residuals
) -> DiscordReport:
    k = net.depth
    batch = x.shape[1]
    residuals: dict[str, np.ndarray] = {}
    upstream: dict[str, np.ndarray] = {}
    downstream: dict[str, np.ndarray] = {}
    pre: dict[str, np.ndarray] = {}
    for layer in range(1, k + 2):
        z = values[2 * layer - 2]
        name = f"affine{layer}"
        residuals[name] = res.affine[layer - 1]
        downstream[name] = z
        upstream[name] = z + res.affine[layer - 1]
        pre[name] = z
        if layer <= k:
            name = f"activation{layer}"
            residuals[name] = res.activation[layer - 1]
            downstream[name] = values[2 * layer - 1]
            upstream[name] = res.masks[layer - 1] * z
            pre[name] = z
    if net.has_output_vertex:
        residuals["output"] = res.output
        downstream["output"] = values[2 * k + 1]
        upstream["output"] = res.phi
        pre["output"] = values[2 * k]
    types = {info.name: info.kind for info in net.edges}
    layers = {info.name: info.layer for info in net.edges}
    per_edge = {name: float(np.sum(r * r)) / batch for name, r in residuals.items()}
    by_layer: dict[int, float] = {}
    by_type: dict[str, float] = {}
    for name, value in per_edge.items():
        by_layer[layers[name]] = by_layer.get(layers[name], 0.0) + value
        by_type[types[name]] = by_type.get(types[name], 0.0) + value
    return DiscordReport(
        per_edge=per_edge,
        by_layer=by_layer,
        by_type=by_type,
        total=sum(per_edge.values()),
        residuals=residuals,
        upstream=upstream,
        downstream=downstream,
        pre_activation=pre,
        edge_types=types,
        edge_layers=layers,
    )


# ---------------------------------------------------------------------------
# Pinned discord
# ---------------------------------------------------------------------------


def as_network(model: Any) -> NeuralSheaf:
    """Return the :class:`NeuralSheaf` of a network or a trained model.

    Accepts a :class:`NeuralSheaf`, a result with a ``.net`` attribute (from
    :func:`sheafsim.train` or :func:`sheafsim.train_gradient_descent`), a fitted
    scikit-learn ``MLPClassifier`` or ``MLPRegressor`` with ReLU hidden layers,
    or a torch ``nn.Sequential`` of ``Linear`` and ``ReLU`` layers. Torch weights
    are copied to float64 numpy arrays.
    """
    if isinstance(model, NeuralSheaf):
        if isinstance(model.weights[0], np.ndarray):
            return model
        return model.to("numpy")
    inner = getattr(model, "net", None)
    if isinstance(inner, NeuralSheaf):
        return as_network(inner)
    if hasattr(model, "coefs_"):
        return NeuralSheaf.from_sklearn(model)
    module = type(model).__module__
    if module.startswith("torch"):
        return NeuralSheaf.from_torch(model)
    raise InvalidValueError(
        f"cannot build a neural sheaf from {type(model).__name__}; pass a "
        "NeuralSheaf, a training result (.net), a fitted scikit-learn "
        "MLPClassifier/MLPRegressor or a torch nn.Sequential"
    )


@dataclass
class PinnedDiscordResult:
    """Outcome of :func:`pinned_discord`.

    Attributes
    ----------
    discord : DiscordReport
        Per-edge discord at the end of the diffusion.
    initial : DiscordReport
        Per-edge discord right after pinning, at the forward pass: only the
        edges next to the output carry the prediction error there.
    status : str
        ``"converged"`` (the largest one-step change fell below ``tol``),
        ``"settled"`` (the energy changed by less than ``energy_rtol`` of
        itself over the last ``check_every`` steps), ``"max_steps"``, or a
        failure status of the diffusion (``"diverged"``, ``"non_finite"``).
    steps : int
        Diffusion steps taken.
    pinned_vertex : str
        ``"z{k+1}"`` for an identity output, ``"y_out"`` otherwise.
    labels : ndarray, shape (n_{k+1}, batch)
        The values the output was pinned to.
    energy_trace : dict of str to list
        ``"step"`` and ``"energy"`` every ``check_every`` steps.
    diffusion : DiffusionResult or ActorRunResult
        The last diffusion call. Its ``state`` contains the final stalks.
    backend : str
        ``"inprocess"`` or ``"actors"``.
    dt : float
        The Euler step used.
    """

    discord: DiscordReport
    initial: DiscordReport
    status: str
    steps: int
    pinned_vertex: str
    labels: np.ndarray = field(repr=False)
    energy_trace: dict[str, list] = field(repr=False)
    diffusion: Any = field(repr=False)
    backend: str = "inprocess"
    dt: float = math.nan

    @property
    def settled(self) -> bool:
        """Whether the run reached its equilibrium (``converged`` or ``settled``)."""
        return self.status in ("converged", "settled")


def _stable_dt(
    net: NeuralSheaf, values: list[np.ndarray], output_mode: str, alpha: float
) -> float:
    """Half the largest stable Euler step at the pattern of ``values``.

    A smaller step than the 90% used elsewhere keeps the chattering of
    coordinates that rest on a ReLU boundary small.
    """
    lam = float(np.max(estimate_lambda_max(net, values, output_mode)))
    return 0.5 * stability_limit("euler") / (alpha * lam * 1.02)


# A pinned run whose energy goes up and down by less than this share of itself
# over the last checks, with no trend, counts as settled.
OSCILLATION_RTOL = 1e-3


def _energy_settled(trace: dict[str, list], rtol: float) -> bool:
    """Return whether the energy has stopped moving between the last checks.

    Settled: the last change is below ``rtol`` of the energy, or the last three
    changes alternate in sign and stay below ``OSCILLATION_RTOL`` of it (a
    steady oscillation of coordinates that switch their ReLU mask).
    """
    energy = trace["energy"]
    if len(energy) < 3:
        return False
    scale = max(abs(energy[-1]), 1e-300)
    changes = np.diff(energy[-4:])
    if abs(changes[-1]) <= rtol * scale:
        return True
    if len(changes) < 3:
        return False
    alternating = bool(np.all(changes[1:] * changes[:-1] < 0))
    return alternating and bool(np.all(np.abs(changes) <= OSCILLATION_RTOL * scale))


def pinned_discord(
    model: Any,
    x: Any,
    y: Any,
    *,
    backend: Literal["inprocess", "actors"] = "inprocess",
    alpha: float = 1.0,
    dt: float | None = None,
    tol: float = 1e-9,
    max_steps: int = 20_000,
    energy_rtol: float = 1e-5,
    check_every: int = 1000,
    check_step: bool = True,
    **actor_options: Any,
) -> PinnedDiscordResult:
    """Locate the prediction error of a trained network edge by edge.

    Starts at the forward pass of ``x``, hard-pins the output to the labels
    ``y`` (``z{k+1}`` for an identity output; ``y_out`` with the identity
    output-edge mode for sigmoid and softmax outputs) and runs the Euler heat
    equation towards its constrained equilibrium. The discord left on each
    edge shows where the tension between input and label sits
    (arXiv:2603.14831).

    With the output pinned, pre-activations often come to rest on a ReLU
    boundary, where the masks switch every step and the one-step change stays
    near ``dt`` times the force (a sliding mode). The energy still settles, so
    besides the usual ``tol`` rule the run also stops once the energy changed
    by less than ``energy_rtol`` of itself over ``check_every`` steps, or
    oscillates by less than 0.1% of itself without a trend.

    For sigmoid and softmax outputs the flow follows the paper's identity
    output-edge mode: the force on ``z{k+1}`` is ``-(phi(z) - y)``, the
    cross-entropy gradient, not the gradient of ``|phi(z) - y|^2``. The output
    edge's discord, and with it the total, can then grow while the other
    edges relax; compare the affine and activation edges.

    Parameters
    ----------
    model : NeuralSheaf or trained model
        Anything :func:`as_network` accepts.
    x : array_like, shape (n_0, batch)
        Inputs as columns.
    y : array_like
        Labels: ``(n_out, batch)`` targets, ``(batch,)`` when ``n_out == 1``,
        or integer class labels ``(batch,)`` for a softmax output.
    backend : {"inprocess", "actors"}
        Diffuse with :func:`sheafsim.diffuse`, or on one Ray actor per vertex
        with :func:`sheafsim.runtime.diffuse_on_actors` (synchronous schedule
        by default, which gives the same iterates). Both run in calls of
        ``check_every`` steps, each starting from the state the previous one
        ended in; on actors every call starts new actors.
    alpha, tol, max_steps
        As in :func:`sheafsim.diffuse`.
    dt : float, optional
        Euler step; default half the stable step at the forward pass.
    energy_rtol : float
        Relative energy change below which the run counts as settled.
    check_every : int
        Steps between two energy checks, and steps per diffusion call.
    check_step : bool
        Check ``alpha * dt`` against the stability limit before the first
        step, as :func:`sheafsim.diffuse` does.
    **actor_options
        Extra keywords for ``diffuse_on_actors`` (``schedule``,
        ``report_every``, ``record_dir``, ...); only with ``backend="actors"``.

    Returns
    -------
    PinnedDiscordResult
    """
    net = as_network(model)
    x = np.asarray(to_numpy(net.check_input(x)), dtype=np.float64)
    batch = x.shape[1]
    labels = prepare_labels(y, net.widths[-1], net.output, n_samples=batch)
    if backend not in ("inprocess", "actors"):
        raise InvalidValueError(
            f"unknown backend {backend!r}; use 'inprocess' or 'actors'"
        )
    if actor_options and backend != "actors":
        raise InvalidValueError(
            f"options {sorted(actor_options)} apply only to backend='actors'; "
            "drop them or pass backend='actors'"
        )
    managed = {"init", "state", "pins", "soft_pins", "min_steps", "output_mode"}
    conflicting = sorted((managed | {"integrator"}) & set(actor_options))
    if conflicting:
        raise InvalidValueError(
            f"pinned_discord sets {conflicting} itself (forward-pass start, the output "
            "pin, Euler); leave them out"
        )
    recording = sorted({"record_dir", "run_id", "overwrite"} & set(actor_options))
    if recording:
        raise InvalidValueError(
            f"pinned_discord does not record tables ({recording} given): it runs "
            "in calls of check_every steps. Record a pinned run with "
            "sheafsim.runtime.diffuse_on_actors and pins=[HardPin(...)]"
        )
    for name, value in (("alpha", alpha), ("dt", dt)):
        if value is not None and not (
            isinstance(value, int | float | np.floating)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            raise InvalidValueError(f"{name}={value!r} is invalid; use a number > 0")
    for name, value in (("max_steps", max_steps), ("check_every", check_every)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 1
        ):
            raise InvalidValueError(f"{name}={value!r} is invalid; use an integer >= 1")
    if not (isinstance(energy_rtol, int | float) and energy_rtol >= 0):
        raise InvalidValueError(
            f"energy_rtol={energy_rtol!r} is invalid; use a number >= 0"
        )
    k = net.depth
    vertex = "y_out" if net.has_output_vertex else f"z{k + 1}"
    output_mode: Literal["jacobian", "identity"] = (
        "identity" if net.has_output_vertex else "jacobian"
    )
    start = net.forward(x).state
    state = {v: np.array(start[v], dtype=np.float64) for v in net.free_vertices}
    state[vertex] = labels.copy()
    initial = discord(net, x, state)
    if dt is None:
        values = [state[v] for v in net.free_vertices]
        dt = _stable_dt(net, values, output_mode, float(alpha))
    pin = HardPin(vertex, None, labels)
    common: dict[str, Any] = {
        "alpha": alpha,
        "dt": dt,
        "tol": tol,
        "pins": [pin],
        "output_mode": output_mode,
        "integrator": "euler",
    }
    trace: dict[str, list] = {"step": [0], "energy": [initial.energy]}
    if backend == "inprocess":

        def run_chunk(**options: Any) -> Any:
            return diffuse(net, x, record_crossings=False, **options)

    else:
        from sheafsim.runtime import diffuse_on_actors

        def run_chunk(**options: Any) -> Any:
            return diffuse_on_actors(net, x, **options, **actor_options)

    result: Any = None
    steps = 0
    status = "max_steps"
    while steps < max_steps:
        chunk = min(int(check_every), int(max_steps) - steps)
        result = run_chunk(
            init=state,
            max_steps=chunk,
            min_steps=min(5, chunk),
            check_step=check_step and steps == 0,
            **common,
        )
        steps += int(result.steps)
        state = {v: np.asarray(result.state[v]) for v in net.free_vertices}
        trace["step"].append(steps)
        trace["energy"].append(discord(net, x, state).energy)
        if result.status != "max_steps":
            status = result.status
            break
        if _energy_settled(trace, float(energy_rtol)):
            status = "settled"
            break
    final = discord(net, x, result.state)
    return PinnedDiscordResult(
        discord=final,
        initial=initial,
        status=status,
        steps=steps,
        pinned_vertex=vertex,
        labels=labels,
        energy_trace=trace,
        diffusion=result,
        backend=backend,
        dt=float(dt),
    )


# ---------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------


@dataclass
class SpectralReport:
    """Extreme eigenpairs of the free Laplacian, one input at a time.

    Attributes
    ----------
    lambda_min, lambda_max, condition : ndarray, shape (batch,)
        Smallest and largest eigenvalue of ``L_free`` at the forward-pass
        activation pattern of each input, and their ratio.
    blocks : list of str
        Free vertices ``z1, a1, ..., z{k+1}[, y_out]``.
    min_shares, max_shares : ndarray, shape (batch, n_blocks)
        Share of the squared norm of the unit ``lambda_min`` (``lambda_max``)
        eigenvector on each block; every row sums to 1.
    min_vectors, max_vectors : ndarray, shape (batch, n_free)
        The unit eigenvectors, signs fixed so that the largest entry is
        positive.
    method : str
        ``"dense"`` or ``"sparse"``.
    """

    lambda_min: np.ndarray
    lambda_max: np.ndarray
    condition: np.ndarray
    blocks: list[str]
    min_shares: np.ndarray
    max_shares: np.ndarray
    min_vectors: np.ndarray = field(repr=False)
    max_vectors: np.ndarray = field(repr=False)
    method: str = "dense"

    def overlap(self, which: Literal["min", "max"] = "min") -> np.ndarray:
        """Absolute cosine between the eigenvectors of every pair of inputs.

        Returns a ``(batch, batch)`` matrix with ones on the diagonal; values
        near 1 mean the extreme mode is the same direction for both inputs.
        """
        vectors = self._vectors(which)
        return np.abs(vectors @ vectors.T)

    def stability(self, which: Literal["min", "max"] = "min") -> float:
        """Mean absolute cosine between the eigenvectors of distinct inputs.

        1 means every input has the same extreme eigenvector; NaN with one
        input.
        """
        batch = self.lambda_min.shape[0]
        if batch < 2:
            return math.nan
        overlap = self.overlap(which)
        return float((overlap.sum() - np.trace(overlap)) / (batch * (batch - 1)))

    def block_shares(self, which: Literal["min", "max"] = "min") -> dict[str, float]:
        """Mean share of each block in the extreme eigenvector, over the inputs."""
        self._vectors(which)
        shares = self.min_shares if which == "min" else self.max_shares
        return {
            block: float(value)
            for block, value in zip(self.blocks, shares.mean(axis=0), strict=True)
        }

    def summary(self) -> dict[str, float]:
        """Medians and interquartile ranges of the eigenvalues over the inputs."""
        return spectral_summary(self.lambda_min, self.lambda_max)

    def _vectors(self, which: str) -> np.ndarray:
        if which not in ("min", "max"):
            raise InvalidValueError(f"which={which!r} is invalid; use 'min' or 'max'")
        return self.min_vectors if which == "min" else self.max_vectors


def spectral_summary(lambda_min: Any, lambda_max: Any) -> dict[str, float]:
    """Median and quartiles of ``lambda_min``, ``lambda_max`` and the condition."""
    lam_min = np.asarray(lambda_min, dtype=np.float64)
    lam_max = np.asarray(lambda_max, dtype=np.float64)
    result: dict[str, float] = {"samples": float(lam_min.size)}
    for name, values in (
        ("lambda_min", lam_min),
        ("lambda_max", lam_max),
        ("condition", lam_max / lam_min),
    ):
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        result[f"{name}_median"] = float(median)
        result[f"{name}_q25"] = float(q25)
        result[f"{name}_q75"] = float(q75)
    return result


def _unit_sign(vector: np.ndarray) -> np.ndarray:
    vector = vector / np.linalg.norm(vector)
    return vector if vector[np.argmax(np.abs(vector))] >= 0 else -vector


def _extreme_pairs(
    laplacian: sp.csr_array, method: str, seed: int
) -> tuple[float, np.ndarray, float, np.ndarray]:
    if method == "dense":
        values, vectors = np.linalg.eigh(laplacian.toarray())
        return values[0], vectors[:, 0], values[-1], vectors[:, -1]
    csc = sp.csc_matrix(laplacian)
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(csc.shape[0])
    top_value, top_vector = eigsh(csc, k=1, which="LA", v0=start)
    # L_free is positive definite, so shift-invert about 0 finds lambda_min
    # from a sparse LU factorisation of L_free itself.
    low_value, low_vector = eigsh(csc, k=1, sigma=0.0, which="LM", v0=start)
    return low_value[0], low_vector[:, 0], top_value[0], top_vector[:, 0]


def spectrum(
    net: Any,
    x: Any,
    *,
    method: Literal["auto", "dense", "sparse"] = "auto",
    seed: int = 0,
) -> SpectralReport:
    """Extreme eigenpairs of the free Laplacian at each input's pattern.

    For each input column the forward pass fixes the ReLU masks (and the
    output Jacobian), which makes ``L_free`` a constant matrix
    (arXiv:2603.14831, section 2). Its smallest eigenvalue bounds the rate at
    which the heat equation reaches the forward pass from that pattern.

    Parameters
    ----------
    net : NeuralSheaf or trained model
        Anything :func:`as_network` accepts.
    x : array_like, shape (n_0, batch)
    method : {"auto", "dense", "sparse"}
        ``"dense"``: ``numpy.linalg.eigh``. ``"sparse"``:
        ``scipy.sparse.linalg.eigsh`` (Lanczos for ``lambda_max``,
        shift-invert at 0 for ``lambda_min``). ``"auto"``: dense up to a free
        dimension of ``DENSE_EIGEN_LIMIT`` (1500), sparse above.
    seed : int
        Seed of the Lanczos start vector.

    Returns
    -------
    SpectralReport
    """
    if method not in ("auto", "dense", "sparse"):
        raise InvalidValueError(
            f"unknown method {method!r}; use 'auto', 'dense' or 'sparse'"
        )
    net = as_network(net)
    x = np.asarray(to_numpy(net.check_input(x)), dtype=np.float64)
    blocks = list(net.free_vertices)
    sizes = [net.stalk_dim(v) for v in blocks]
    n_free = sum(sizes)
    chosen = method
    if method == "auto":
        chosen = "dense" if n_free <= DENSE_EIGEN_LIMIT else "sparse"
    if chosen == "sparse" and n_free < 3:
        chosen = "dense"
    batch = x.shape[1]
    lam_min = np.empty(batch)
    lam_max = np.empty(batch)
    min_vectors = np.empty((batch, n_free))
    max_vectors = np.empty((batch, n_free))
    for j in range(batch):
        laplacian = free_laplacian(net, x[:, j : j + 1])
        low, low_vec, high, high_vec = _extreme_pairs(laplacian, chosen, seed)
        lam_min[j], lam_max[j] = low, high
        min_vectors[j] = _unit_sign(low_vec)
        max_vectors[j] = _unit_sign(high_vec)
    bounds = np.cumsum([0, *sizes])

    def shares(vectors: np.ndarray) -> np.ndarray:
        squared = vectors * vectors
        return np.stack(
            [
                squared[:, bounds[i] : bounds[i + 1]].sum(axis=1)
                for i in range(len(sizes))
            ],
            axis=1,
        )

    return SpectralReport(
        lambda_min=lam_min,
        lambda_max=lam_max,
        condition=lam_max / lam_min,
        blocks=blocks,
        min_shares=shares(min_vectors),
        max_shares=shares(max_vectors),
        min_vectors=min_vectors,
        max_vectors=max_vectors,
        method=chosen,
    )
