"""AdamS and AMSGradS: Adam with stable weight decay, scaled by the global mean of v_hat."""
from __future__ import annotations

import torch

from .. import ops
from .base import STEP_KEY, Bucket, SWDOptimizer, check_range

_MOMENTS = ("exp_avg", "exp_avg_sq")


def check_betas(betas, names=("beta1", "beta2")) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair ({names[0]}, {names[1]}), got {betas!r}")
    for name, beta in zip(names, betas):
        check_range(f"{name} (betas)", beta, 0.0, 1.0)


class AdamS(SWDOptimizer):
    r"""Adam with Stable Weight Decay (Xie, Sato, Sugiyama).

    Like :class:`torch.optim.AdamW`, but the decoupled decay is divided by the global mean
    of the bias-corrected second moment, taken over every element of every parameter with a
    grad in this step: ``theta *= 1 - lr * weight_decay / (v_bar + decay_eps) ** decay_power``.
    ``decay_power=0`` is exactly AdamW. ``amsgrad=True`` is AMSGradS. ``state_dtype`` keeps
    the moments in another dtype than the params (e.g. fp32 state for bf16 params).
    ``backend`` is ``"auto"``, ``"native"``, ``"triton"`` or ``"torch"``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 amsgrad=False, decay_power=0.5, decay_eps=0.0, *, maximize=False,
                 state_dtype=None, backend="auto"):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decay_power=decay_power, decay_eps=decay_eps, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def _validate_group(self, group: dict) -> None:
        check_range("lr", group["lr"], 0.0)
        check_betas(group["betas"])
        check_range("eps", group["eps"], 0.0)
        check_range("weight_decay", group["weight_decay"], 0.0)
        check_range("decay_power", group["decay_power"], 0.0)
        check_range("decay_eps", group["decay_eps"], 0.0)

    def _active_state_keys(self, group: dict) -> tuple[str, ...]:
        return _MOMENTS + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _run(self, buckets: list[Bucket], grad_scale, found_inf) -> None:
        calls = [self._arguments(b, grad_scale, found_inf) for b in buckets]
        if len(buckets) == 1 and self._process_group is None:  # one op (one launch if it can)
            self._accum(buckets[0].device).zero_()
            self._op(buckets[0], "adam_step")(**calls[0])
            return
        reduce_names = ops.ARG_NAMES["adam_reduce"]
        self._global_mean(buckets, [{k: a[k] for k in reduce_names} for a in calls])
        for bucket, a in zip(buckets, calls):
            a.pop("v_sums")
            self._op(bucket, "adam_update")(**a)

    def _arguments(self, bucket: Bucket, grad_scale, found_inf) -> dict:
        group, device = bucket.group, bucket.device
        lists = bucket.lists
        amsgrad = bool(group["amsgrad"])
        lr_tensor, lr = self._lr_args(group, device)
        beta1, beta2 = (float(b) for b in group["betas"])
        return dict(
            params=bucket.params, grads=bucket.grads, exp_avgs=lists["exp_avg"],
            exp_avg_sqs=lists["exp_avg_sq"],
            max_exp_avg_sqs=lists["max_exp_avg_sq"] if amsgrad else [],
            state_steps=lists[STEP_KEY],
            v_sums=[] if amsgrad else self._bucket_v_sums(bucket),
            accum=self._accum(device), lr_tensor=lr_tensor, lr=lr, beta1=beta1, beta2=beta2,
            weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
            decay_power=float(group["decay_power"]), decay_eps=float(group["decay_eps"]),
            amsgrad=amsgrad, maximize=bool(group["maximize"]),
            grad_scale=self._on(grad_scale, device), found_inf=self._on(found_inf, device))


class AMSGradS(AdamS):
    """AdamS with the AMSGrad maximum of the second moment (``AdamS(amsgrad=True)``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 amsgrad=True, decay_power=0.5, decay_eps=0.0, *, maximize=False,
                 state_dtype=None, backend="auto"):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decay_power,
                         decay_eps, maximize=maximize, state_dtype=state_dtype,
                         backend=backend)
