"""The neural sheaf of a feedforward ReLU network.

Bosca and Ghrist (arXiv:2603.14831) encode a network with widths
``[n_0, ..., n_{k+1}]`` as a cellular sheaf on a path graph with one vertex per
intermediate quantity::

    x - z1 - a1 - z2 - ... - ak - z{k+1} [- y_out]

and one edge per computational step: ``affine l`` joins ``a_{l-1}`` (``x`` for
l = 1) to ``z_l`` with upstream map ``a -> W_l a + b_l``; ``activation l`` joins
``z_l`` to ``a_l`` with the state-dependent upstream map
``R_l = diag(1[z_l >= 0])``; the ``output`` edge joins ``z_{k+1}`` to ``y_out``
with the output nonlinearity (sigmoid or softmax) when there is one. Every
downstream map is the identity. The forward pass is the unique harmonic
extension of the input.

Stalk values are batched as columns: every vertex value has shape
``(dim, batch)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sheafsim._backend import namespace
from sheafsim.errors import InvalidValueError, ShapeError

__all__ = ["NeuralSheaf", "ForwardPass", "EdgeInfo", "OUTPUTS"]

logger = logging.getLogger(__name__)

OUTPUTS = ("identity", "sigmoid", "softmax")
Output = Literal["identity", "sigmoid", "softmax"]


@dataclass(frozen=True)
class EdgeInfo:
    """One edge of the neural sheaf.

    Attributes
    ----------
    name : str
        ``"affine{l}"``, ``"activation{l}"`` or ``"output"``.
    kind : str
        ``"affine"``, ``"activation"`` or ``"output"``.
    layer : int
        Layer number ``l`` (the output edge belongs to layer ``k + 1``).
    upstream, downstream : str
        Vertex names; the upstream vertex owns the non-identity map.
    """

    name: str
    kind: str
    layer: int
    upstream: str
    downstream: str


@dataclass
class ForwardPass:
    """Every intermediate quantity of one batched forward pass.

    Attributes
    ----------
    state : dict of str to ndarray
        ``"x"``, ``"z1"``, ``"a1"``, ..., ``"z{k+1}"`` and ``"y_out"`` when the
        output is not the identity; each of shape ``(dim, batch)``.
    output : ndarray, shape (n_{k+1}, batch)
        The network output ``phi(z_{k+1})``.
    """

    state: dict[str, Any]
    output: Any

    def __getitem__(self, vertex: str) -> Any:
        return self.state[vertex]


def _sigmoid(xp: Any, z: Any) -> Any:
    # Split by sign so that exp never overflows.
    positive = z >= 0
    ez = xp.exp(-xp.abs(z))
    return xp.where(positive, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def _softmax(xp: Any, z: Any) -> Any:
    shifted = xp.exp(z - xp.max(z, axis=0, keepdims=True))
    return shifted / xp.sum(shifted, axis=0, keepdims=True)


def apply_output(xp: Any, output: str, z: Any) -> Any:
    """Apply the output nonlinearity ``phi`` to ``z`` of shape (n, batch)."""
    if output == "identity":
        return z
    if output == "sigmoid":
        return _sigmoid(xp, z)
    return _softmax(xp, z)


def output_vjp(xp: Any, output: str, phi: Any, v: Any) -> Any:
    """Return ``J_phi(z)^T v`` column by column, given ``phi = phi(z)``."""
    if output == "identity":
        return v
    if output == "sigmoid":
        return phi * (1.0 - phi) * v
    # Softmax Jacobian diag(p) - p p^T is symmetric.
    return phi * (v - xp.sum(phi * v, axis=0, keepdims=True))


class NeuralSheaf:
    """Cellular sheaf of a feedforward ReLU network (arXiv:2603.14831).

    Parameters
    ----------
    weights : sequence of array_like
        ``W_1, ..., W_{k+1}``; ``W_l`` has shape ``(n_l, n_{l-1})``.
    biases : sequence of array_like
        ``b_1, ..., b_{k+1}``; ``b_l`` has shape ``(n_l,)`` or ``(n_l, 1)``.
    output : {"identity", "sigmoid", "softmax"}
        Output nonlinearity ``phi``. With ``"sigmoid"`` or ``"softmax"`` the sheaf
        has an extra vertex ``y_out`` joined to ``z{k+1}`` by the output edge.

    Notes
    -----
    Vertices are named ``x, z1, a1, ..., zk, ak, z{k+1}`` (and ``y_out``); edges
    are typed affine, activation and output with their layer number
    (:attr:`edges`). Weights are stored as given (numpy float64 by default, or
    torch tensors), and every kernel runs in the namespace of those arrays.

    Examples
    --------
    >>> import numpy as np
    >>> net = NeuralSheaf.random([2, 4, 1], seed=0)
    >>> net.vertices
    ['x', 'z1', 'a1', 'z2']
    >>> net.forward(np.zeros((2, 3))).output.shape
    (1, 3)
    """

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any],
        output: Output = "identity",
    ) -> None:
        if output not in OUTPUTS:
            raise InvalidValueError(
                f"unknown output activation {output!r}; use one of {list(OUTPUTS)}"
            )
        if len(weights) == 0:
            raise InvalidValueError(
                "a neural sheaf needs at least one weight matrix; got an empty list"
            )
        if len(weights) != len(biases):
            raise ShapeError(
                f"got {len(weights)} weight matrices but {len(biases)} bias vectors; "
                "pass one bias per layer"
            )
        self.output: str = output
        self.weights: list[Any] = []
        self.biases: list[Any] = []
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
            w, b = _as_layer(w, b, layer)
            if self.weights and w.shape[1] != self.weights[-1].shape[0]:
                raise ShapeError(
                    f"weight W{layer} has shape {tuple(w.shape)} but layer "
                    f"{layer - 1} has width {self.weights[-1].shape[0]}; W{layer} "
                    f"must have shape (n_{layer}, {self.weights[-1].shape[0]})"
                )
            self.weights.append(w)
            self.biases.append(b)
        self.widths: list[int] = [int(self.weights[0].shape[1])] + [
            int(w.shape[0]) for w in self.weights
        ]
        if min(self.widths) < 1:
            raise ShapeError(
                f"layer widths {self.widths} contain 0; every layer needs at least "
                "one unit"
            )
        if output == "softmax" and self.widths[-1] == 1:
            raise InvalidValueError(
                "a softmax over one output unit is constantly 1; use "
                "output='sigmoid' for a single probability"
            )

    @classmethod
    def random(
        cls, widths: Sequence[int], seed: int = 0, output: Output = "identity"
    ) -> NeuralSheaf:
        """He-initialised network: ``W_l ~ N(0, 2 / n_{l-1})``, ``b_l = 0``.

        Parameters
        ----------
        widths : sequence of int
            Layer widths ``[n_0, ..., n_{k+1}]``, at least two entries.
        seed : int
            Seed of the ``numpy.random.default_rng`` generator.
        output : {"identity", "sigmoid", "softmax"}
        """
        widths = _check_widths(widths)
        rng = np.random.default_rng(check_seed(seed))
        weights = [
            rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_out, n_in))
            for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        ]
        biases = [np.zeros((n, 1)) for n in widths[1:]]
        return cls(weights, biases, output=output)

    @classmethod
    def from_sklearn(cls, model: Any) -> NeuralSheaf:
        """Build the sheaf of a fitted scikit-learn ``MLPClassifier``/``MLPRegressor``.

        The hidden activation must be ``"relu"``. The output nonlinearity follows
        the model's ``out_activation_``: identity for regression, sigmoid for a
        binary or multilabel classifier, softmax for a multiclass one. For a
        binary classifier the sheaf output is ``P(class 1)``, the second column
        of ``predict_proba``.
        """
        if not hasattr(model, "coefs_"):
            raise InvalidValueError(
                f"{type(model).__name__} has no coefs_; pass a fitted scikit-learn "
                "MLPClassifier or MLPRegressor (call .fit first)"
            )
        if getattr(model, "activation", None) != "relu":
            raise InvalidValueError(
                f"the model uses hidden activation {model.activation!r}; the neural "
                "sheaf needs activation='relu'"
            )
        out = {"identity": "identity", "logistic": "sigmoid", "softmax": "softmax"}
        if model.out_activation_ not in out:
            raise InvalidValueError(
                f"unsupported output activation {model.out_activation_!r}; expected "
                f"one of {sorted(out)}"
            )
        weights = [np.asarray(w, dtype=np.float64).T for w in model.coefs_]
        biases = [np.asarray(b, dtype=np.float64) for b in model.intercepts_]
        return cls(weights, biases, output=out[model.out_activation_])  # type: ignore[arg-type]

    @classmethod
    def from_torch(cls, module: Any, output: Output | None = None) -> NeuralSheaf:
        """Build the sheaf of a torch ``nn.Sequential`` of ``Linear`` and ``ReLU``.

        A trailing ``nn.Sigmoid`` or ``nn.Softmax(dim=-1 or 1)`` sets the output
        activation; ``output`` overrides it. The weights are copied to float64
        numpy arrays; use :meth:`to` to move them back to torch.
        """
        try:
            import torch.nn as nn
        except ModuleNotFoundError:
            raise InvalidValueError(
                "from_torch needs torch; install it with pip install 'sheafsim[torch]'"
            ) from None

        layers = list(module.children()) if isinstance(module, nn.Sequential) else []
        if not layers:
            raise InvalidValueError(
                f"expected a non-empty torch.nn.Sequential, got {type(module).__name__}"
            )
        detected: str = "identity"
        if isinstance(layers[-1], nn.Sigmoid):
            detected, layers = "sigmoid", layers[:-1]
        elif isinstance(layers[-1], nn.Softmax):
            detected, layers = "softmax", layers[:-1]
        weights, biases = [], []
        for position, layer in enumerate(layers):
            expect_linear = position % 2 == 0
            if expect_linear and isinstance(layer, nn.Linear):
                weights.append(layer.weight.detach().cpu().double().numpy())
                if layer.bias is None:
                    biases.append(np.zeros(layer.out_features))
                else:
                    biases.append(layer.bias.detach().cpu().double().numpy())
            elif not expect_linear and isinstance(layer, nn.ReLU):
                continue
            else:
                wanted = "Linear" if expect_linear else "ReLU"
                raise InvalidValueError(
                    f"layer {position} of the Sequential is {type(layer).__name__} "
                    f"but {wanted} was expected; the neural sheaf covers alternating "
                    "Linear and ReLU layers ending in Linear (optionally followed by "
                    "Sigmoid or Softmax)"
                )
        if len(layers) % 2 == 0:
            raise InvalidValueError(
                "the Sequential ends in ReLU; the last layer must be Linear"
            )
        return cls(weights, biases, output=output or detected)  # type: ignore[arg-type]

    def to(self, like: Any = None, **kwargs: Any) -> NeuralSheaf:
        """Return a copy with weights converted by ``torch.as_tensor(..., **kwargs)``.

        ``NeuralSheaf.to(None, dtype=torch.float64, device="cpu")`` gives torch
        weights; ``to("numpy")`` converts back to float64 numpy arrays.
        """
        conv: tuple[list[Any], list[Any]]
        if like == "numpy":
            from sheafsim._backend import to_numpy

            conv = (
                [to_numpy(w) for w in self.weights],
                [to_numpy(b) for b in self.biases],
            )
        else:
            import torch

            conv = (
                [torch.as_tensor(w, **kwargs) for w in self.weights],
                [torch.as_tensor(b, **kwargs) for b in self.biases],
            )
        return NeuralSheaf(conv[0], conv[1], output=self.output)  # type: ignore[arg-type]

    @property
    def depth(self) -> int:
        """Number of hidden ReLU layers ``k``."""
        return len(self.weights) - 1

    @property
    def has_output_vertex(self) -> bool:
        """Whether the sheaf has the vertex ``y_out`` (sigmoid or softmax output)."""
        return self.output != "identity"

    @property
    def vertices(self) -> list[str]:
        """Vertex names in path order, ``x`` first."""
        k = self.depth
        names = ["x"]
        for layer in range(1, k + 1):
            names += [f"z{layer}", f"a{layer}"]
        names.append(f"z{k + 1}")
        if self.has_output_vertex:
            names.append("y_out")
        return names

    @property
    def free_vertices(self) -> list[str]:
        """Vertices that move under diffusion (all but ``x``)."""
        return self.vertices[1:]

    @property
    def edges(self) -> list[EdgeInfo]:
        """Edges in the order affine 1, activation 1, ..., affine k+1, output."""
        k = self.depth
        result = []
        upstream = "x"
        for layer in range(1, k + 2):
            result.append(
                EdgeInfo(f"affine{layer}", "affine", layer, upstream, f"z{layer}")
            )
            if layer <= k:
                result.append(
                    EdgeInfo(
                        f"activation{layer}",
                        "activation",
                        layer,
                        f"z{layer}",
                        f"a{layer}",
                    )
                )
                upstream = f"a{layer}"
        if self.has_output_vertex:
            result.append(EdgeInfo("output", "output", k + 1, f"z{k + 1}", "y_out"))
        return result

    def stalk_dim(self, vertex: str) -> int:
        """Dimension of the stalk at ``vertex``."""
        if vertex == "x":
            return self.widths[0]
        if vertex == "y_out" and self.has_output_vertex:
            return self.widths[-1]
        if vertex[:1] in ("z", "a") and vertex[1:].isdigit():
            layer = int(vertex[1:])
            top = self.depth + 1 if vertex[0] == "z" else self.depth
            if 1 <= layer <= top:
                return self.widths[layer]
        raise InvalidValueError(
            f"unknown vertex {vertex!r}; this network has vertices {self.vertices}"
        )

    def check_input(self, x: Any) -> Any:
        """Validate ``x`` and return it with shape ``(n_0, batch)``.

        A 1-D input of length ``n_0`` is treated as one sample.
        """
        xp = namespace(self.weights[0])
        like = self.weights[0]
        if xp is np or not hasattr(x, "shape"):
            try:
                host = np.asarray(x)
                if np.iscomplexobj(host):
                    raise TypeError("complex values")
                x = host.astype(like.dtype) if xp is np else host
            except (TypeError, ValueError) as error:
                raise InvalidValueError(
                    f"input x of type {type(x).__name__} cannot be read as a real "
                    f"array ({error}); pass a float array of shape (n_0, batch)"
                ) from None
        if xp is not np:
            x = xp.asarray(x, dtype=like.dtype, device=like.device)
        if x.ndim == 0:
            raise ShapeError(
                f"input x is a scalar but the network expects shape "
                f"(n_0, batch) = ({self.widths[0]}, batch)"
            )
        if x.ndim == 1:
            x = xp.reshape(x, (x.shape[0], 1))
        if x.ndim != 2 or x.shape[0] != self.widths[0]:
            raise ShapeError(
                f"input x has shape {tuple(x.shape)} but the network expects "
                f"(n_0, batch) = ({self.widths[0]}, batch); samples are columns, so "
                "pass X.T for a (batch, features) matrix"
            )
        if x.shape[1] == 0:
            raise ShapeError(
                "input x has 0 columns; pass at least one sample as a column"
            )
        if not bool(xp.all(xp.isfinite(x))):
            raise InvalidValueError(
                "input x contains NaN or infinite values; clean or impute them first"
            )
        return x

    def forward(self, x: Any) -> ForwardPass:
        """Run the ordinary forward pass and return every intermediate.

        Parameters
        ----------
        x : array_like, shape (n_0, batch)
            Input samples as columns.
        """
        x = self.check_input(x)
        xp = namespace(x)
        state = {"x": x}
        a = x
        k = self.depth
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True), 1):
            z = w @ a + b
            state[f"z{layer}"] = z
            if layer <= k:
                a = xp.where(z >= 0, z, 0.0 * z)
                state[f"a{layer}"] = a
        out = apply_output(xp, self.output, state[f"z{k + 1}"])
        if self.has_output_vertex:
            state["y_out"] = out
        return ForwardPass(state=state, output=out)

    __call__ = forward

    def __repr__(self) -> str:
        return f"NeuralSheaf(widths={self.widths}, output={self.output!r})"


def check_seed(seed: Any) -> int | None:
    """Return ``seed`` if it is None or a non-negative integer, else raise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidValueError(
            f"seed={seed!r} is invalid; use a non-negative integer or None"
        )
    return int(seed)


def _check_widths(widths: Sequence[int]) -> list[int]:
    widths = list(widths)
    if len(widths) < 2 or any(int(n) != n or n < 1 for n in widths):
        raise InvalidValueError(
            f"widths {widths} are invalid; give at least two positive integers "
            "[n_0, ..., n_{k+1}]"
        )
    return [int(n) for n in widths]


def _as_layer(w: Any, b: Any, layer: int) -> tuple[Any, Any]:
    xp = namespace(w) if not isinstance(w, list | tuple) else np
    if xp is np:
        # float32 arrays stay float32 (the float32 backend); all else is float64.
        dtype = np.float32 if getattr(w, "dtype", None) == np.float32 else np.float64
        w = np.asarray(w, dtype=dtype)
        b = np.asarray(b, dtype=dtype)
    else:
        b = xp.asarray(b, dtype=w.dtype, device=w.device)
    if w.ndim != 2:
        raise ShapeError(f"weight W{layer} has shape {tuple(w.shape)}; it must be 2-D")
    n_out = w.shape[0]
    if tuple(b.shape) == (n_out,):
        b = xp.reshape(b, (n_out, 1))
    if tuple(b.shape) != (n_out, 1):
        raise ShapeError(
            f"bias b{layer} has shape {tuple(b.shape)} but W{layer} has "
            f"{n_out} rows; b{layer} must have shape ({n_out},) or ({n_out}, 1)"
        )
    for name, arr in ((f"W{layer}", w), (f"b{layer}", b)):
        if not bool(xp.all(xp.isfinite(arr))):
            raise InvalidValueError(
                f"{name} contains NaN or infinite values; check the training "
                "that produced it"
            )
    return w, b


def state_from_mapping(net: NeuralSheaf, state: Mapping[str, Any], batch: int) -> dict:
    """Validate a user-supplied initial state (vertex -> (dim, batch) array)."""
    unknown = set(state) - set(net.vertices)
    if unknown:
        raise InvalidValueError(
            f"initial state names unknown vertices {sorted(unknown)}; "
            f"valid vertices are {net.vertices}"
        )
    missing = [v for v in net.free_vertices if v not in state]
    if missing:
        raise InvalidValueError(
            f"initial state is missing vertices {missing}; give every free vertex "
            "or use init='random', 'zeros' or 'forward_pass'"
        )
    xp = namespace(net.weights[0])
    result = {}
    for vertex in net.free_vertices:
        value = state[vertex]
        if xp is np:
            value = np.asarray(value, dtype=net.weights[0].dtype)
        else:
            like = net.weights[0]
            value = xp.asarray(value, dtype=like.dtype, device=like.device)
        expected = (net.stalk_dim(vertex), batch)
        if tuple(value.shape) != expected:
            raise ShapeError(
                f"initial state of {vertex!r} has shape {tuple(value.shape)} but "
                f"must be {expected} (stalk dimension, batch)"
            )
        result[vertex] = xp.asarray(value, copy=True)
    return result
