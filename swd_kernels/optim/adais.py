"""AdaiS: Adaptive Inertia (Adai) with stable/decoupled weight decay."""
from __future__ import annotations

from torch.optim.optimizer import required

from .adams import check_betas
from .base import STEP_KEY, Bucket, SWDOptimizer, check_range


class AdaiS(SWDOptimizer):
    r"""Adai with Stable Weight Decay (Xie, Sato, Sugiyama).

    The inertia ``beta1 = clamp(1 - beta0 * v_hat / v_bar, 0, 1 - eps)`` is set per element
    from the global mean ``v_bar`` of the bias-corrected second moment; decay is decoupled,
    ``theta *= 1 - lr * weight_decay``. ``betas = (beta0, beta2)``; ``eps`` bounds the inertia
    and must lie in (0, 1). ``lr`` has no default: give it here or in every param group.
    """

    _initial_values = {"beta1_prod": 1.0}

    def __init__(self, params, lr=required, betas=(0.1, 0.99), eps=1e-3, weight_decay=0.0,
                 *, maximize=False, state_dtype=None, backend="auto"):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def _validate_group(self, group: dict) -> None:
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

    def _run(self, buckets: list[Bucket], grad_scale, found_inf) -> None:
        calls = []
        for bucket in buckets:
            group, device = bucket.group, bucket.device
            lists = bucket.lists
            lr_tensor, lr = self._lr_args(group, device)
            beta0, beta2 = (float(b) for b in group["betas"])
            calls.append(dict(
                params=bucket.params, grads=bucket.grads, exp_avgs=lists["exp_avg"],
                exp_avg_sqs=lists["exp_avg_sq"], beta1_prods=lists["beta1_prod"],
                state_steps=lists[STEP_KEY], accum=self._accum(device), lr_tensor=lr_tensor,
                lr=lr, beta0=beta0, beta2=beta2, weight_decay=float(group["weight_decay"]),
                eps=float(group["eps"]), maximize=bool(group["maximize"]),
                grad_scale=self._on(grad_scale, device), found_inf=self._on(found_inf, device)))
        self._global_mean(buckets, [dict(
            grads=a["grads"], exp_avg_sqs=a["exp_avg_sqs"], max_exp_avg_sqs=[],
            state_steps=a["state_steps"],
            v_sums=self._bucket_v_sums(b),
            accum=a["accum"], beta2=a["beta2"], amsgrad=False, grad_scale=a["grad_scale"],
            found_inf=a["found_inf"]) for b, a in zip(buckets, calls)])
        for bucket, a in zip(buckets, calls):
            self._op(bucket, "adai_update")(**a)
