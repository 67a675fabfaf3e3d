"""Exception hierarchy of sheafsim.

Every error raised on purpose by the package derives from :class:`SheafsimError`,
so a caller can catch the whole family with one ``except`` clause. All classes
take a single message string, so they pickle and cross Ray process boundaries
unchanged.
"""

from __future__ import annotations

__all__ = [
    "SheafsimError",
    "ShapeError",
    "InvalidValueError",
    "ConfigError",
    "ConvergenceError",
    "StepSizeError",
    "RuntimeFailure",
]


class SheafsimError(Exception):
    """Base class of every error raised by sheafsim."""


class ShapeError(SheafsimError, ValueError):
    """An array, map or stalk has a shape that does not fit its place."""


class InvalidValueError(SheafsimError, ValueError):
    """A parameter or array contains a value outside its allowed range."""


class ConfigError(SheafsimError, ValueError):
    """An experiment configuration file is invalid."""


class ConvergenceError(SheafsimError, RuntimeError):
    """A diffusion or training run ended without converging.

    Raised only when the caller asks for it (``raise_on_failure=True``);
    otherwise the failure is reported as the ``status`` of the result.
    """

    def __init__(self, message: str, status: str = "max_steps") -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keep ``status`` when pickled across processes
        return (type(self), (str(self), self.status))


class StepSizeError(InvalidValueError):
    """The Euler step alpha*dt is too large for the sheaf Laplacian to be stable."""


class RuntimeFailure(SheafsimError, RuntimeError):
    """A vertex actor or the coordinator of a Ray run failed."""
