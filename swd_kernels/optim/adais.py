"""AdaiS: Adaptive Inertia (Adai) with stable/decoupled weight decay."""
from __future__ import annotations

from torch.optim.optimizer import required

from .adams import check_betas
from .base import Bucket, SWDOptimizer, check_range


class AdaiS(SWDOptimizer):
    r"""Adai with Stable Weight Decay (Xie, Sato, Sugiyama).

    The inertia ``beta1 = clamp(1 - beta0 * v_hat / v_bar, 0, 1 - eps)`` is set per element
    from the global mean ``v_bar`` of the bias-corrected second moment; decay is decoupled,
    ``theta *= 1 - lr * weight_decay``. ``betas = (beta0, beta2)``; ``eps`` bounds the inertia
    and must lie in (0, 1). ``lr`` has no default: give it here or in every param group.

    Keyword options shared by all four optimizers: see
    :class:`swd_kernels.optim.base.SWDOptimizer`.
    """

    _initial_values = {"beta1_prod": 1.0}

    def __init__(self, params, lr=required, betas=(0.1, 0.99), eps=1e-3, weight_decay=0.0,
                 *, maximize=False, **options):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, **options)

    def _check_hyperparameters(self, group: dict) -> None:
        check_range("lr", group["lr"], 0.0)
        check_betas(group["betas"], names=("beta0", "beta2"))
        check_range("eps", group["eps"], 0.0, 1.0,
                    fix="AdaiS's eps bounds the inertia, beta1 <= 1 - eps; use e.g. 1e-3.")
        if group["eps"] == 0:
            raise ValueError("Invalid eps: 0; AdaiS's eps bounds the inertia, beta1 <= 1 - eps, "
                             "and must be > 0 (e.g. 1e-3)")
        check_range("weight_decay", group["weight_decay"], 0.0)

    def _active_state_keys(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "beta1_prod")

    def _keeps_v_sum(self, group: dict) -> bool:
        return True

    _update_op = "adai_update"  # after AdamS's reduction, without amsgrad

    def _decay_applied(self, group: dict, accum):
        lr_tensor, lr = self._lr_args(group, accum.device)
        return (lr if lr_tensor is None else lr_tensor.double()) * group["weight_decay"]

    def _family_arguments(self, bucket: Bucket) -> dict:
        group, lists = bucket.group, bucket.lists
        beta0, beta2 = (float(b) for b in group["betas"])
        return dict(
            exp_avgs=lists["exp_avg"], exp_avg_sqs=lists["exp_avg_sq"],
            beta1_prods=lists["beta1_prod"], max_exp_avg_sqs=[], amsgrad=False,
            v_sums=self._bucket_v_sums(bucket), accum=self._accum(bucket.device),
            beta0=beta0, beta2=beta2, eps=float(group["eps"]))
