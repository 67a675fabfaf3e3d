"""Array backends: where stalks, maps and forces live, and in which precision.

Every numerical kernel of sheafsim is written once against the Python array
API (:mod:`sheafsim._kernels`), so the same code runs on numpy arrays and on
torch tensors on the CPU or a CUDA device. An :class:`ArrayBackend` names one
such choice and converts networks, inputs and states to it::

    backend = ArrayBackend("torch", device="cuda", dtype="float32")
    net = backend.network(net)          # weights on the GPU
    x = backend.asarray(x)

Between vertex actors the values travel as host numpy arrays; each actor
converts what it receives to its own backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheafsim._backend import namespace, to_numpy
from sheafsim.errors import InvalidValueError

__all__ = [
    "ArrayBackend",
    "BACKENDS",
    "DTYPES",
    "resolve_backend",
    "backend_of",
    "to_numpy",
    "check_tolerance",
]

# The smallest stopping tolerance float32 runs meet reliably: one-step changes
# of coordinates of order 1 round to multiples of about 6e-8, and a torch
# float32 run with tol 1e-7 did not converge where numpy float32 did.
FLOAT32_MIN_TOL = 1e-6

BACKENDS = ("numpy", "torch")
"""Names of the array libraries sheafsim runs on."""

DTYPES = ("float64", "float32")
"""Floating-point precisions of stalks and maps."""


def _import_torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError:
        raise InvalidValueError(
            "backend 'torch' needs torch; install it with pip install "
            "'sheafsim[torch]' (pip install torch==2.13.0 gives the CPU build)"
        ) from None
    return torch


@dataclass(frozen=True)
class ArrayBackend:
    """An array library, a device and a floating-point precision.

    Parameters
    ----------
    name : {"numpy", "torch"}
    device : str
        ``"cpu"``, or for torch ``"cuda"`` / ``"cuda:N"``.
    dtype : {"float64", "float32"}

    Raises
    ------
    InvalidValueError
        An unknown name or precision, a device numpy cannot use, or torch not
        installed. A CUDA device is checked only when arrays are created
        (:meth:`check_device`), so a driver without a GPU can describe the
        backend of GPU actors.
    """

    name: str = "numpy"
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise InvalidValueError(
                f"unknown array backend {self.name!r}; use one of {list(BACKENDS)}"
            )
        if self.dtype not in DTYPES:
            raise InvalidValueError(
                f"unknown dtype {self.dtype!r}; use one of {list(DTYPES)}"
            )
        device = str(self.device)
        if self.name == "numpy" and device != "cpu":
            raise InvalidValueError(
                f"numpy arrays live on the CPU, not on {device!r}; use "
                "backend 'torch' for a GPU"
            )
        if self.name == "torch":
            kind = device.split(":", 1)[0]
            if kind not in ("cpu", "cuda"):
                raise InvalidValueError(
                    f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'"
                )
            if ":" in device and not device.split(":", 1)[1].isdigit():
                raise InvalidValueError(
                    f"device {device!r} has an invalid index; use 'cuda:0', "
                    "'cuda:1', ..."
                )
            _import_torch()

    @property
    def is_cuda(self) -> bool:
        """Whether arrays live on a CUDA device."""
        return self.name == "torch" and str(self.device).startswith("cuda")

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 8 if self.dtype == "float64" else 4

    @property
    def native_dtype(self) -> Any:
        """The dtype object of the array library."""
        if self.name == "numpy":
            return np.dtype(self.dtype)
        return getattr(_import_torch(), self.dtype)

    @property
    def xp(self) -> Any:
        """The array namespace (``numpy``, or the array-API view of torch)."""
        if self.name == "numpy":
            return np
        import array_api_compat.torch

        return array_api_compat.torch

    def check_device(self) -> None:
        """Raise if the device cannot be used from this process."""
        if not self.is_cuda:
            return
        torch = _import_torch()
        if not torch.cuda.is_available():
            raise InvalidValueError(
                f"device {self.device!r} was requested but torch sees no CUDA "
                f"device here (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}); use device 'cpu' or run on a GPU machine"
            )
        index = torch.device(self.device).index or 0
        if index >= torch.cuda.device_count():
            raise InvalidValueError(
                f"device {self.device!r} does not exist: this process sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )

    def asarray(self, array: Any) -> Any:
        """Return ``array`` (numpy, torch or nested lists) on this backend.

        Values already of the right kind, device and precision are returned as
        they are; host numpy arrays become torch tensors without a copy on the
        CPU when the precision matches.
        """
        if self.name == "numpy":
            return np.asarray(to_numpy(array), dtype=self.dtype)
        torch = _import_torch()
        self.check_device()
        if isinstance(array, torch.Tensor):
            return array.to(device=self.device, dtype=self.native_dtype)
        host = np.asarray(array, dtype=self.dtype)
        return torch.from_numpy(host).to(device=self.device)

    def network(self, net: Any) -> Any:
        """Return a copy of the neural sheaf ``net`` on this backend."""
        from sheafsim.neural import NeuralSheaf

        weights = [self.asarray(w) for w in net.weights]
        biases = [self.asarray(b) for b in net.biases]
        if self.name == "numpy":
            weights = [w.copy() for w in weights]
            biases = [b.copy() for b in biases]
        else:
            weights = [w.clone() for w in weights]
            biases = [b.clone() for b in biases]
        return NeuralSheaf(weights, biases, output=net.output)

    def state(self, state: Mapping[Any, Any]) -> dict[Any, Any]:
        """Return a mapping with every array moved to this backend."""
        return {key: self.asarray(value) for key, value in state.items()}

    def matches(self, array: Any) -> bool:
        """Return whether ``array`` already lives on this backend."""
        if self.name == "numpy":
            return isinstance(array, np.ndarray) and array.dtype == self.dtype
        torch = _import_torch()
        return (
            isinstance(array, torch.Tensor)
            and array.dtype == self.native_dtype
            and array.device == torch.device(self.device)
        )

    def synchronize(self) -> None:
        """Wait for queued device work (for timing); a no-op on the CPU."""
        if self.is_cuda:
            _import_torch().cuda.synchronize(self.device)

    def __str__(self) -> str:
        return f"{self.name}/{self.device}/{self.dtype}"


def resolve_backend(
    backend: ArrayBackend | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ArrayBackend:
    """Build an :class:`ArrayBackend` from a backend object or names.

    ``backend`` may be an :class:`ArrayBackend` (then ``device`` and ``dtype``
    must be None), a name, or None for numpy. ``device`` defaults to ``"cpu"``
    and ``dtype`` to ``"float64"``.
    """
    if isinstance(backend, ArrayBackend):
        if device is not None or dtype is not None:
            raise InvalidValueError(
                "pass device and dtype inside the ArrayBackend, not next to it"
            )
        return backend
    if backend is not None and not isinstance(backend, str):
        raise InvalidValueError(
            f"backend must be an ArrayBackend or one of {list(BACKENDS)}, got "
            f"{type(backend).__name__}"
        )
    return ArrayBackend(backend or "numpy", device or "cpu", dtype or "float64")


def backend_of(array: Any) -> ArrayBackend:
    """Return the backend an array lives on."""
    if namespace(array) is np:
        dtype = str(np.asarray(array).dtype)
        return ArrayBackend("numpy", "cpu", dtype if dtype in DTYPES else "float64")
    dtype = str(array.dtype).removeprefix("torch.")
    return ArrayBackend("torch", str(array.device), dtype)


def check_tolerance(dtype: Any, tol: float) -> None:
    """Warn if ``tol`` is finer than a float32 run can resolve.

    ``dtype`` is a dtype object or name of numpy or torch. Only a warning,
    because a tolerance that is never met is also how a run of a fixed number
    of steps is asked for.
    """
    name = str(dtype).removeprefix("torch.")
    if name == "float32" and tol < FLOAT32_MIN_TOL:
        warnings.warn(
            f"tol={tol:g} is below what float32 can resolve, so the run will "
            f"likely end at max_steps; use tol >= {FLOAT32_MIN_TOL:g} with "
            "float32, or dtype 'float64'",
            stacklevel=3,
        )
