"""Batched residuals and heat forces of the neural sheaf.

All functions take the array namespace ``xp`` and work on numpy arrays and torch
tensors alike. The forces are the negative gradient of the sheaf energy
``E = 1/2 sum_l |r_l|^2 + 1/2 sum_l |s_l|^2 (+ 1/2 |phi(z_{k+1}) - y_out|^2)``
with affine residuals ``r_l = W_l a_{l-1} + b_l - z_l`` and activation residuals
``s_l = R_l z_l - a_l``, ``R_l = diag(1[z_l >= 0])`` (arXiv:2603.14831):

=====================  ==============================================
vertex                 force
=====================  ==============================================
``z_l``, l <= k        ``r_l - R_l s_l``
``a_l``                ``s_l - W_{l+1}^T r_{l+1}``
``z_{k+1}``            ``r_{k+1}`` (identity output), or
                       ``r_{k+1} - J_phi^T (phi - y_out)`` ("jacobian") or
                       ``r_{k+1} - (phi - y_out)`` ("identity" mode)
``y_out``              ``phi(z_{k+1}) - y_out``
=====================  ==============================================

``R_l s_l = R_l (z_l - a_l)`` because ``R_l`` is a 0/1 diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sheafsim.neural import NeuralSheaf, apply_output, output_vjp

__all__ = ["Residuals", "neural_residuals", "neural_forces"]


@dataclass
class Residuals:
    """Edge residuals at one state, each of shape ``(n_l, batch)``.

    ``affine[l-1]`` is ``r_l``, ``activation[l-1]`` is ``s_l``, ``masks[l-1]``
    is the 0/1 float mask ``diag(R_l)``. ``phi`` and ``output`` (``phi - y_out``)
    are set only when the network has an output vertex.
    """

    affine: list[Any]
    activation: list[Any]
    masks: list[Any]
    phi: Any = None
    output: Any = None


def neural_residuals(
    xp: Any,
    net: NeuralSheaf,
    first_affine: Any,
    values: list[Any],
) -> Residuals:
    """Compute every edge residual.

    Parameters
    ----------
    first_affine : array, shape (n_1, batch)
        ``W_1 x + b_1``, constant while ``x`` is pinned.
    values : list of arrays
        Free stalks in vertex order ``z1, a1, ..., z{k+1}[, y_out]``.
    """
    k = net.depth
    affine, activation, masks = [], [], []
    for layer in range(1, k + 2):
        z = values[2 * layer - 2]
        if layer == 1:
            pre = first_affine
        else:
            pre = net.weights[layer - 1] @ values[2 * layer - 3] + net.biases[layer - 1]
        affine.append(pre - z)
        if layer <= k:
            mask = xp.astype(z >= 0, z.dtype)
            masks.append(mask)
            activation.append(mask * z - values[2 * layer - 1])
    result = Residuals(affine, activation, masks)
    if net.has_output_vertex:
        result.phi = apply_output(xp, net.output, values[2 * k])
        result.output = result.phi - values[2 * k + 1]
    return result


def neural_forces(
    xp: Any,
    net: NeuralSheaf,
    res: Residuals,
    output_mode: str = "jacobian",
) -> list[Any]:
    """Heat forces of every free vertex (without the factor alpha).

    ``output_mode`` is ``"jacobian"`` (gradient flow of the energy) or
    ``"identity"`` (drop the output Jacobian), used only with an output vertex.
    """
    k = net.depth
    forces = []
    for layer in range(1, k + 1):
        forces.append(
            res.affine[layer - 1] - res.masks[layer - 1] * res.activation[layer - 1]
        )
        pulled = net.weights[layer].mT @ res.affine[layer]
        forces.append(res.activation[layer - 1] - pulled)
    top = res.affine[k]
    if net.has_output_vertex:
        if output_mode == "jacobian":
            top = top - output_vjp(xp, net.output, res.phi, res.output)
        else:
            top = top - res.output
        forces.append(top)
        forces.append(res.output)
    else:
        forces.append(top)
    return forces


def edge_discord(xp: Any, net: NeuralSheaf, res: Residuals) -> dict[str, float]:
    """Mean over the batch of the squared residual norm of every edge."""
    batch = res.affine[0].shape[1]
    result: dict[str, float] = {}
    k = net.depth
    for layer in range(1, k + 2):
        result[f"affine{layer}"] = float(xp.sum(res.affine[layer - 1] ** 2)) / batch
        if layer <= k:
            result[f"activation{layer}"] = (
                float(xp.sum(res.activation[layer - 1] ** 2)) / batch
            )
    if net.has_output_vertex:
        result["output"] = float(xp.sum(res.output**2)) / batch
    return result
