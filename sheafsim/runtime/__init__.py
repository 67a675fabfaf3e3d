"""Ray actor runtime: one actor per sheaf vertex and a coordinator.

Every vertex of the sheaf is an async Ray actor that stores its own stalk and
its own side of each incident edge's restriction map, computes its heat force
from its neighbours' messages, and pushes its restricted values to them
(Bosca and Ghrist, arXiv:2603.14831). A coordinator actor applies the stopping
rule of :func:`sheafsim.dynamics.diffuse` to the vertices' reports.
:func:`diffuse_on_actors` runs a neural sheaf and
:func:`diffuse_sheaf_on_actors` a general cellular sheaf with fixed maps.
"""

from sheafsim.runtime.coordinator import ReportRow
from sheafsim.runtime.driver import SCHEDULES, ActorRunResult, diffuse_on_actors
from sheafsim.runtime.general import diffuse_sheaf_on_actors
from sheafsim.runtime.gpu import check_gpu_memory, estimate_actor_memory
from sheafsim.runtime.maps import (
    AffineMap,
    IdentityMap,
    MatrixMap,
    OutputMap,
    ReluMaskMap,
    RestrictionMap,
)
from sheafsim.runtime.spec import DelayModel
from sheafsim.runtime.training import ActorTrainingResult, train_on_actors

__all__ = [
    "diffuse_on_actors",
    "diffuse_sheaf_on_actors",
    "train_on_actors",
    "estimate_actor_memory",
    "check_gpu_memory",
    "ActorTrainingResult",
    "ActorRunResult",
    "SCHEDULES",
    "DelayModel",
    "ReportRow",
    "RestrictionMap",
    "IdentityMap",
    "MatrixMap",
    "AffineMap",
    "ReluMaskMap",
    "OutputMap",
]
