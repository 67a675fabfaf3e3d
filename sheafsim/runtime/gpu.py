"""GPU placement of vertex actors and the memory guard.

With a CUDA backend every stepping vertex actor requests a share
``gpus_per_actor`` of one GPU from Ray, so ``floor(1 / gpus_per_actor)``
actors share a device. The default share ``1 / n`` for ``n`` stepping actors
puts them all on one GPU. Before any actor starts, :func:`place_on_gpus`
checks that the Ray cluster has enough GPUs and that the actors sharing a GPU
fit in its memory.

The memory estimate (:func:`estimate_actor_memory`) is a pure function of the
vertex specs, so it can be checked without a GPU. Torch allocates device memory
on demand, so an actor uses what its arrays need plus its CUDA context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from sheafsim.backend import ArrayBackend
from sheafsim.errors import InvalidValueError, RuntimeFailure
from sheafsim.runtime.maps import ReluMaskMap
from sheafsim.runtime.spec import RunSettings, VertexSpec
from sheafsim.runtime.vertex import MAX_IN_FLIGHT_PER_EDGE

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "GPU_SHARE_UNIT",
    "STALK_TEMPORARIES",
    "EDGE_TEMPORARIES",
    "check_gpu_options",
    "gpu_share",
    "actors_per_gpu",
    "kept_copies",
    "estimate_actor_memory",
    "check_gpu_memory",
    "place_on_gpus",
]

GPU_SHARE_UNIT = 1e-4
"""Smallest GPU share that Ray accepts. Shares are rounded down to a multiple of it."""

# NOTE: an estimate, not a measurement. The CUDA context and kernels of a torch
# process take device memory that depends on the GPU, the driver and the torch
# build.
CUDA_CONTEXT_BYTES = 512 * 2**20
"""Estimated device memory of one actor process's CUDA context, in bytes."""

STALK_TEMPORARIES = 6
"""Stalk-sized arrays a stepping vertex keeps besides its past stalks.

They are the evaluation point and the previous stalk of Nesterov, the force,
the new stalk, the change and one pulled-back residual.
"""

EDGE_TEMPORARIES = 2
"""Edge-sized arrays a vertex keeps per edge besides the received messages.

They are the restricted value ``apply_e(x_v)``, kept from one step to the
next, and the edge residual.
"""

GPU_QUERY_TIMEOUT_S = 120.0
"""Seconds to wait for the task that reads the GPU's total memory."""

_GIB = 2**30


def gpu_share(gpus_per_actor: float | None, n_stepping: int) -> float:
    """Return the GPU share of each stepping actor, rounded down to 1e-4.

    Parameters
    ----------
    gpus_per_actor : float or None
        Requested share in (0, 1]; None for ``1 / n_stepping``.
    n_stepping : int
        Number of stepping vertex actors.

    Raises
    ------
    InvalidValueError
        A share outside (0, 1], or smaller than 1e-4 after rounding.
    """
    if gpus_per_actor is None:
        requested = 1.0 / max(n_stepping, 1)
    else:
        if isinstance(gpus_per_actor, bool) or not isinstance(
            gpus_per_actor, int | float
        ):
            raise InvalidValueError(
                f"gpus_per_actor={gpus_per_actor!r} is invalid; give a number in (0, 1]"
            )
        requested = float(gpus_per_actor)
        if not (0.0 < requested <= 1.0):
            raise InvalidValueError(
                f"gpus_per_actor={gpus_per_actor} is invalid; give a share in "
                "(0, 1], because each vertex actor computes on one device"
            )
    # Ray stores resources in units of 1e-4. Rounding down keeps
    # floor(1 / share) actors on one GPU whichever way Ray rounds.
    units = math.floor(requested / GPU_SHARE_UNIT + 1e-6)
    if units < 1:
        raise InvalidValueError(
            f"a GPU share of {requested:.3g} per actor is below Ray's unit of "
            f"{GPU_SHARE_UNIT:g}; give gpus_per_actor >= {GPU_SHARE_UNIT:g}"
        )
    return units * GPU_SHARE_UNIT


def actors_per_gpu(share: float, n_stepping: int) -> int:
    """Return how many stepping actors with GPU share ``share`` Ray puts on one GPU."""
    units = round(share / GPU_SHARE_UNIT)
    return max(1, min(n_stepping, round(1 / GPU_SHARE_UNIT) // units))


def kept_copies(settings: RunSettings) -> tuple[int, int]:
    """Return the stalks a vertex keeps and the messages it stores per edge.

    Under the synchronous schedule a vertex keeps ``window + 1`` past stalks,
    and a neighbour runs at most one step ahead of it, so the vertex stores at
    most two messages per edge. Under the asynchronous schedule a vertex keeps one
    stalk. A neighbour runs at most ``B + 1`` steps ahead under a staleness
    bound ``B``, and without one each edge has at most
    ``MAX_IN_FLIGHT_PER_EDGE`` messages in flight.
    """
    if settings.schedule == "sync":
        return settings.window + 1, 2
    if settings.staleness_bound is not None:
        return 1, settings.staleness_bound + 2
    return 1, MAX_IN_FLIGHT_PER_EDGE + 1


def estimate_actor_memory(
    specs: Sequence[VertexSpec],
    backend: ArrayBackend,
    *,
    kept_stalks: int = 1,
    kept_messages: int = 2,
) -> dict[str, int]:
    """Estimate the device memory of every stepping vertex actor, in bytes.

    For a vertex with stalk dimension ``d``, batch ``B``, incident edges of
    dimension ``d_e`` and pins on ``p`` coordinates, the estimate is::

        itemsize * B * (d * (kept_stalks + STALK_TEMPORARIES)
                        + sum_e d_e * (EDGE_TEMPORARIES + kept_messages)
                        + p)
        + bytes of the maps' own arrays (W and b, or M)
        + kept_stalks * d * B        (boolean ReLU masks of a z_l vertex)

    ``itemsize`` is 8 for float64 and 4 for float32. The CUDA context is not
    included (see :data:`CUDA_CONTEXT_BYTES`). Static vertices compute on the
    host and are left out.

    Parameters
    ----------
    specs : sequence of VertexSpec
        Specs as the driver builds them.
    backend : ArrayBackend
        Backend of the stepping vertices.
    kept_stalks, kept_messages : int
        Past stalks a vertex keeps and messages it stores per edge
        (:func:`kept_copies`).

    Returns
    -------
    dict of str to int
        Estimated bytes by vertex name.
    """
    itemsize = backend.itemsize
    estimates: dict[str, int] = {}
    for spec in specs:
        if spec.static:
            continue
        dim, batch = (int(n) for n in spec.value.shape)
        values = dim * (kept_stalks + STALK_TEMPORARIES)
        for end in spec.edges:
            values += end.map.edge_dim(dim) * (EDGE_TEMPORARIES + kept_messages)
        for pin in [*spec.hard_pins, *spec.soft_pins]:
            values += len(pin.index)
        total = itemsize * batch * values
        total += sum(end.map.stored_bytes(itemsize) for end in spec.edges)
        if any(isinstance(end.map, ReluMaskMap) for end in spec.edges):
            total += kept_stalks * dim * batch
        estimates[spec.name] = total
    return estimates


def check_gpu_memory(
    estimates: Mapping[str, int],
    total_bytes: int,
    actors_per_gpu: int,
    *,
    context_bytes: int = 0,
    device_name: str = "the GPU",
    dtype: str = "float64",
) -> None:
    """Raise unless the actors that may share one GPU fit in its memory.

    Ray decides which actors share a GPU, so the check takes the
    ``actors_per_gpu`` largest estimates, each with ``context_bytes`` added.

    Raises
    ------
    InvalidValueError
        The estimated memory per GPU exceeds ``total_bytes``. The message gives
        the GiB needed and available, the actors per GPU and the fixes.
    """
    if not estimates:
        return
    per_actor = sorted(
        (value + context_bytes for value in estimates.values()), reverse=True
    )
    sharing = max(1, min(actors_per_gpu, len(per_actor)))
    needed = sum(per_actor[:sharing])
    if needed <= total_bytes:
        return
    largest = per_actor[0]
    fit = total_bytes // largest
    actors = "actor" if sharing == 1 else "actors"
    summary = (
        f"the vertex actors need an estimated {needed / _GIB:.2f} GiB on one GPU "
        f"({sharing} {actors} per GPU, {context_bytes / _GIB:.2f} GiB of CUDA "
        f"context each), but {device_name} has {total_bytes / _GIB:.2f} GiB"
    )
    if context_bytes >= total_bytes:
        raise InvalidValueError(
            f"{summary}; the CUDA context alone does not fit, so use a GPU with "
            "more memory or device 'cpu'"
        )
    fixes = ["diffuse fewer samples at a time"]
    if dtype != "float32":
        fixes.append("use dtype='float32' (half the memory of float64)")
    if fit >= 1 and sharing > fit:
        fixes.append(
            f"put fewer actors on each GPU: gpus_per_actor={1 / fit:.4g} places "
            f"at most {fit} on each GPU and needs "
            f"{math.ceil(len(per_actor) / fit)} GPUs"
        )
    elif fit < 1:
        fixes[0] += " (even one actor alone does not fit)"
    raise InvalidValueError(f"{summary}. Fixes: {'; '.join(fixes)}")


def check_gpu_options(backend: ArrayBackend, gpus_per_actor: float | None) -> None:
    """Check ``gpus_per_actor`` and the device against the backend, without Ray.

    Raises
    ------
    InvalidValueError
        ``gpus_per_actor`` without a CUDA backend, an invalid share, or a CUDA
        device with an index other than 0.
    """
    if not backend.is_cuda:
        if gpus_per_actor is not None:
            raise InvalidValueError(
                f"gpus_per_actor={gpus_per_actor} applies only to a CUDA backend, "
                f"not to {backend}; drop it or use device='cuda'"
            )
        return
    if backend.device not in ("cuda", "cuda:0"):
        raise InvalidValueError(
            f"device {backend.device!r} cannot be used on actors: Ray gives each "
            "vertex actor its own GPU, which the actor sees as 'cuda'; use "
            "device='cuda'"
        )
    if gpus_per_actor is not None:
        gpu_share(gpus_per_actor, 1)


def place_on_gpus(
    specs: Sequence[VertexSpec],
    settings: RunSettings,
    gpus_per_actor: float | None,
) -> float | None:
    """Check the Ray cluster for a CUDA run and return each actor's GPU share.

    Returns None for a backend that is not CUDA. Call it after ``ray.init``
    and before any actor starts.

    Raises
    ------
    InvalidValueError
        ``gpus_per_actor`` without a CUDA backend, an invalid share, a cluster
        without enough GPUs, or actors that do not fit in GPU memory.
    RuntimeFailure
        The task that reads the GPU's memory failed or timed out.
    """
    backend = settings.backend
    check_gpu_options(backend, gpus_per_actor)
    if not backend.is_cuda:
        return None
    n_stepping = sum(1 for spec in specs if not spec.static)
    if n_stepping == 0:
        # Static vertices compute on the host, so the run needs no GPU.
        return None
    share = gpu_share(gpus_per_actor, n_stepping)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus <= 0:
        raise InvalidValueError(
            f"device {backend.device!r} was requested but the Ray cluster has no "
            "GPU; use device='cpu', or start Ray on machines with GPUs "
            "(ray start --num-gpus=N, or ray.init(num_gpus=N))"
        )
    sharing = actors_per_gpu(share, n_stepping)
    needed_gpus = math.ceil(n_stepping / sharing)
    if needed_gpus > math.floor(gpus):
        raise InvalidValueError(
            f"{n_stepping} stepping vertex actors with gpus_per_actor={share:g} "
            f"need {needed_gpus} GPUs but the Ray cluster has {gpus:g}; give "
            f"gpus_per_actor <= {gpu_share(None, math.ceil(n_stepping / gpus)):g}"
        )
    device_name, total = _query_gpu_memory(share)
    kept_stalks, kept_messages = kept_copies(settings)
    estimates = estimate_actor_memory(
        specs, backend, kept_stalks=kept_stalks, kept_messages=kept_messages
    )
    check_gpu_memory(
        estimates,
        total,
        sharing,
        context_bytes=CUDA_CONTEXT_BYTES,
        device_name=device_name,
        dtype=backend.dtype,
    )
    return share


def _device_memory() -> tuple[str, int]:
    """Return the name and total memory of the first GPU visible to this process."""
    import torch

    properties = torch.cuda.get_device_properties(0)
    return str(properties.name), int(properties.total_memory)


# A GPU task's worker exits after one call, so its CUDA context is freed.
_remote_device_memory = ray.remote(max_calls=1)(_device_memory)


def _query_gpu_memory(share: float) -> tuple[str, int]:
    """Read the name and total memory of a GPU in a task that reserves ``share``."""
    reference: Any = _remote_device_memory.options(num_gpus=share).remote()
    try:
        return ray.get(reference, timeout=GPU_QUERY_TIMEOUT_S)
    except GetTimeoutError as error:
        ray.cancel(reference, force=True)
        raise RuntimeFailure(
            f"no GPU task started within {GPU_QUERY_TIMEOUT_S:g} s to read the GPU "
            "memory; the cluster's GPUs may be busy with other work"
        ) from error
    except RayError as error:
        raise RuntimeFailure(
            f"the task that reads the GPU memory failed: {error}; check that "
            "torch with CUDA is installed on the GPU nodes"
        ) from error
