"""Step-size check from an estimate of lambda_max of the free Laplacian.

Forward Euler on a fixed activation pattern is stable iff
``alpha * dt < 2 / lambda_max(L_free)``. The check linearises the heat force at
the current state (masks fixed, output Jacobian frozen, inputs and biases
removed), which gives ``-L_free`` of every sample's pattern, and runs a batched
power iteration to estimate each sample's ``lambda_max``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sheafsim._backend import namespace, to_numpy
from sheafsim.errors import StepSizeError
from sheafsim.integrators import stability_limit
from sheafsim.neural import NeuralSheaf, apply_output, output_vjp

__all__ = ["estimate_lambda_max", "check_step_size"]

logger = logging.getLogger(__name__)


def _linear_forces(
    xp: Any, net: NeuralSheaf, masks: list[Any], phi: Any, output_mode: str, v: list
) -> list[Any]:
    """Apply ``-L_free`` of the pattern ``masks`` to the perturbation ``v``."""
    k = net.depth
    forces = []
    affine = []
    for layer in range(1, k + 2):
        z = v[2 * layer - 2]
        pre = 0.0 * z if layer == 1 else net.weights[layer - 1] @ v[2 * layer - 3]
        affine.append(pre - z)
    for layer in range(1, k + 1):
        mask = masks[layer - 1]
        s = mask * v[2 * layer - 2] - v[2 * layer - 1]
        forces.append(affine[layer - 1] - mask * s)
        forces.append(s - net.weights[layer].mT @ affine[layer])
    top = affine[k]
    if net.has_output_vertex:
        gap = output_vjp(xp, net.output, phi, v[2 * k]) - v[2 * k + 1]
        if output_mode == "jacobian":
            top = top - output_vjp(xp, net.output, phi, gap)
        else:
            top = top - gap
        forces += [top, gap]
    else:
        forces.append(top)
    return forces


def estimate_lambda_max(
    net: NeuralSheaf,
    values: list[Any],
    output_mode: str = "jacobian",
    iterations: int = 60,
    seed: int = 0,
) -> np.ndarray:
    """Estimate ``lambda_max`` of ``L_free`` for every sample column.

    Parameters
    ----------
    values : list of arrays
        Free stalks ``z1, a1, ..., z{k+1}[, y_out]``, each ``(dim, batch)``;
        their masks and output Jacobian define the pattern.

    Returns
    -------
    ndarray, shape (batch,)
        Rayleigh-quotient estimates from a batched power iteration. They
        approach ``lambda_max`` from below.
    """
    xp = namespace(values[0])
    k = net.depth
    masks = [xp.astype(values[2 * layer] >= 0, values[0].dtype) for layer in range(k)]
    phi = apply_output(xp, net.output, values[2 * k]) if net.has_output_vertex else None
    rng = np.random.default_rng(seed)
    v = []
    for value in values:
        draw = rng.standard_normal(tuple(value.shape))
        v.append(
            draw
            if xp is np
            else xp.asarray(draw, dtype=value.dtype, device=value.device)
        )
    estimate = None
    for _ in range(iterations):
        norm = xp.sqrt(sum(xp.sum(u * u, axis=0, keepdims=True) for u in v))
        v = [u / norm for u in v]
        w = [-f for f in _linear_forces(xp, net, masks, phi, output_mode, v)]
        estimate = sum(xp.sum(a * b, axis=0) for a, b in zip(v, w, strict=True))
        v = w
    return to_numpy(estimate)


def check_step_size(
    net: NeuralSheaf,
    x: Any,
    values: list[Any],
    alpha: float,
    dt: float,
    output_mode: str,
    integrator: str,
    momentum: float | None = None,
    soft_pin_gamma: float = 0.0,
) -> float:
    """Raise :class:`StepSizeError` if ``alpha * dt`` is too large to be stable.

    ``soft_pin_gamma`` is the largest soft-pin strength. A soft pin adds
    ``gamma`` to the diagonal of the Laplacian, so ``lambda_max + gamma`` bounds
    the largest eigenvalue from above. Returns that estimate.
    """
    lam = float(np.max(estimate_lambda_max(net, values, output_mode)))
    lam += soft_pin_gamma
    limit = stability_limit(integrator, momentum)
    logger.debug("estimated lambda_max %.4g, stability limit %.3g", lam, limit)
    # The power iteration underestimates lambda_max, so keep a 2% margin.
    if alpha * dt * lam * 1.02 >= limit:
        stable_dt = 0.9 * limit / (alpha * lam * 1.02)
        raise StepSizeError(
            f"alpha*dt = {alpha * dt:.4g} is too large for the {integrator} "
            f"integrator: the free Laplacian at the initial pattern has "
            f"lambda_max ~ {lam:.4g}, so alpha*dt must stay below "
            f"{limit:g}/lambda_max = {limit / lam:.4g}. Use dt <= {stable_dt:.3g}"
            + (
                f" or weaker soft pins (largest gamma {soft_pin_gamma:g})"
                if soft_pin_gamma
                else ""
            )
            + ", or pass check_step=False to run anyway"
        )
    return lam
