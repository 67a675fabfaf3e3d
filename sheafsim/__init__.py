"""sheafsim: cellular-sheaf diffusion of neural networks, in process and on Ray.

Bosca and Ghrist (arXiv:2603.14831) showed that a feedforward ReLU network is a
cellular sheaf whose forward pass is the unique harmonic extension of the input.
"""

from sheafsim import backend, diagnostics, training
from sheafsim.backend import ArrayBackend
from sheafsim.baseline import GradientDescentResult, train_gradient_descent
from sheafsim.certificates import (
    Certificate,
    as_cellular_sheaf,
    certify,
    extreme_eigenvalues,
    free_coboundary,
    free_laplacian,
)
from sheafsim.datasets import Dataset, load_dataset
from sheafsim.diagnostics import discord, pinned_discord, spectrum
from sheafsim.dynamics import DiffusionResult, diffuse, initial_state
from sheafsim.errors import (
    ConfigError,
    ConvergenceError,
    InvalidValueError,
    RuntimeFailure,
    ShapeError,
    SheafsimError,
    StepSizeError,
)
from sheafsim.neural import EdgeInfo, ForwardPass, NeuralSheaf
from sheafsim.pins import HardPin, SoftPin
from sheafsim.run import Run, load_run
from sheafsim.sheaf import (
    CellularSheaf,
    constant_sheaf,
    random_orthogonal_sheaf,
    sheaf_from_maps,
)
from sheafsim.sheaf_diffusion import diffuse_sheaf
from sheafsim.training import TrainingResult, train

__version__ = "0.1.0"

__all__ = [
    "CellularSheaf",
    "diffuse_sheaf",
    "constant_sheaf",
    "sheaf_from_maps",
    "random_orthogonal_sheaf",
    "certify",
    "Certificate",
    "as_cellular_sheaf",
    "free_coboundary",
    "free_laplacian",
    "extreme_eigenvalues",
    "NeuralSheaf",
    "ForwardPass",
    "EdgeInfo",
    "diffuse",
    "initial_state",
    "DiffusionResult",
    "HardPin",
    "SoftPin",
    "SheafsimError",
    "ShapeError",
    "InvalidValueError",
    "ConfigError",
    "ConvergenceError",
    "StepSizeError",
    "RuntimeFailure",
    "train",
    "TrainingResult",
    "train_gradient_descent",
    "GradientDescentResult",
    "load_dataset",
    "Dataset",
    "training",
    "load_run",
    "Run",
    "diagnostics",
    "backend",
    "ArrayBackend",
    "discord",
    "pinned_discord",
    "spectrum",
]
