"""The scale of AdamS's weight decay, and the conversion from an AdamW value.

AdamS multiplies the weights by ``1 - lr * weight_decay / (v_bar + decay_eps) ** decay_power``
each step, and ``sqrt(v_bar)`` is about the RMS of the gradients (often 1e-4 to 1e-2). So its
``weight_decay`` lives on the L2/SGD scale: the paper uses 5e-4 for AdamS where AdamW needs 0.5.
"""
from __future__ import annotations

import torch


def decay_per_step(lr: float, weight_decay: float, decay_power: float, decay_eps: float,
                   vhat_mean: float) -> float:
    """The fraction ``lr * wd / (v_bar + decay_eps)^p`` by which one AdamS step shrinks the
    weights: the whole ``lr * wd`` when ``p`` is 0 (AdamW), 0 when ``v_bar + decay_eps`` is 0
    (no gradient yet: no decay)."""
    if decay_power == 0:
        return lr * weight_decay
    base = vhat_mean + decay_eps
    return lr * weight_decay * base ** -decay_power if base > 0 else 0.0


def weight_decay_from_adamw(adamw_weight_decay, vhat_mean, decay_power: float = 0.5,
                            decay_eps: float = 0.0):
    """The AdamS ``weight_decay`` that decays as much per step as AdamW with
    ``adamw_weight_decay`` does, at a measured global mean ``vhat_mean`` of v_hat (a float or
    a tensor, e.g. ``AdamS.vhat_mean()`` after some steps): ``wd_W * (v_bar + decay_eps)^p``,
    i.e. ``wd_W * sqrt(v_bar)`` by default. v_bar changes during training (it usually falls),
    so this matches AdamW's decay at the moment measured, not over the whole run."""
    if not (isinstance(adamw_weight_decay, (int, float)) and adamw_weight_decay >= 0):
        raise ValueError(f"adamw_weight_decay must be a number >= 0, got "
                         f"{adamw_weight_decay!r}")
    if not (isinstance(decay_power, (int, float)) and decay_power >= 0):
        raise ValueError(f"decay_power must be a number >= 0, got {decay_power!r}")
    if not (isinstance(decay_eps, (int, float)) and decay_eps >= 0):
        raise ValueError(f"decay_eps must be a number >= 0, got {decay_eps!r}")
    if torch.is_tensor(vhat_mean):
        return adamw_weight_decay * (vhat_mean.double() + decay_eps) ** decay_power
    if not (isinstance(vhat_mean, (int, float)) and vhat_mean >= 0):
        raise ValueError(f"vhat_mean must be a measured v_bar >= 0 (a float or a tensor), got "
                         f"{vhat_mean!r}")
    return adamw_weight_decay * (vhat_mean + decay_eps) ** decay_power
