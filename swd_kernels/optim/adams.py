"""AdamS and AMSGradS: Adam with stable weight decay, scaled by the global mean of v_hat."""
from __future__ import annotations

from ..backends.foreach.adam import decay_scale
from .base import Bucket, SWDOptimizer, check_range
from .decay_watch import DecayWatch

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
    ``decay_power=0`` is exactly AdamW. ``amsgrad=True`` is AMSGradS.

    ``weight_decay`` lives on the L2/SGD scale, not AdamW's: the decay per step is
    ``lr * weight_decay / sqrt(v_bar)`` (the paper uses 5e-4 where AdamW uses 0.5);
    :func:`swd_kernels.weight_decay_from_adamw` converts an AdamW value at a measured
    ``v_bar``. A step whose decay reaches 1 (the weights would be multiplied by <= 0) is
    warned about once. The keyword options shared by all four optimizers (``state_dtype``,
    ``backend``, ``unscale_in_step``, torch's ``foreach``/``fused``/``capturable``/
    ``differentiable``) are described in :class:`swd_kernels.optim.base.SWDOptimizer`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 amsgrad=False, decay_power=0.5, decay_eps=0.0, *, maximize=False,
                 **options):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decay_power=decay_power, decay_eps=decay_eps, maximize=maximize)
        self._decay_watch = DecayWatch(type(self).__name__)
        super().__init__(params, defaults, **options)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_decay_watch", DecayWatch(type(self).__name__))

    def _check_hyperparameters(self, group: dict) -> None:
        check_range("lr", group["lr"], 0.0)
        check_betas(group["betas"])
        check_range("eps", group["eps"], 0.0)
        check_range("weight_decay", group["weight_decay"], 0.0)
        check_range("decay_power", group["decay_power"], 0.0)
        check_range("decay_eps", group["decay_eps"], 0.0)

    def _active_state_keys(self, group: dict) -> tuple[str, ...]:
        return _MOMENTS + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _keeps_v_sum(self, group: dict) -> bool:
        return not group["amsgrad"]  # AMSGradS's max is not linear: it reduces over v itself

    def _run(self, buckets: list[Bucket], grad_scale, found_inf) -> None:
        if len(buckets) == 1 and self._process_group is None and self.max_grad_norm is None:
            bucket = buckets[0]  # one op, one launch where the backend can
            self._accum(bucket.device).zero_()
            self._call(bucket, "adam_step", self._arguments(bucket, grad_scale, found_inf))
            self._record_stats(bucket.device, self._on(found_inf, bucket.device))
        else:
            super()._run(buckets, grad_scale, found_inf)
        if buckets:
            self._decay_watch.record(self._accum(buckets[0].device), self.param_groups)

    def _decay_applied(self, group: dict, accum):
        if group["weight_decay"] == 0:  # no decay whatever v_bar is: no kernels to say so
            return 0.0
        lr_tensor, lr = self._lr_args(group, accum.device)
        lr = lr if lr_tensor is None else lr_tensor.double()
        return lr * group["weight_decay"] * decay_scale(
            accum, float(group["decay_power"]), float(group["decay_eps"]))

    def _family_arguments(self, bucket: Bucket) -> dict:
        group, lists = bucket.group, bucket.lists
        amsgrad = bool(group["amsgrad"])
        beta1, beta2 = (float(b) for b in group["betas"])
        return dict(
            exp_avgs=lists["exp_avg"], exp_avg_sqs=lists["exp_avg_sq"],
            max_exp_avg_sqs=lists["max_exp_avg_sq"] if amsgrad else [],
            v_sums=[] if amsgrad else self._bucket_v_sums(bucket),
            accum=self._accum(bucket.device), beta1=beta1, beta2=beta2,
            eps=float(group["eps"]), decay_power=float(group["decay_power"]),
            decay_eps=float(group["decay_eps"]), amsgrad=amsgrad)


class AMSGradS(AdamS):
    """AdamS with the AMSGrad maximum of the second moment (``AdamS(amsgrad=True)``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 amsgrad=True, decay_power=0.5, decay_eps=0.0, *, maximize=False,
                 **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decay_power,
                         decay_eps, maximize=maximize, **options)
