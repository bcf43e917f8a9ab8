"""SGDS: heavy-ball SGD with stable weight decay, scaled by (1 - dampening) / (1 - momentum)."""
from __future__ import annotations

from torch.optim.optimizer import required

from .base import Bucket, SWDOptimizer, check_range


class SGDS(SWDOptimizer):
    r"""SGD (heavy ball, optional Nesterov) with Stable Weight Decay.

    ``theta *= 1 - (1 - dampening) / (1 - momentum) * lr * weight_decay``, then the update of
    :class:`torch.optim.SGD` without its L2 term. With ``momentum=0, weight_decay=0`` it is
    ``torch.optim.SGD``. ``lr`` has no default: give it here or in every param group.

    Keyword options shared by all four optimizers: see
    :class:`swd_kernels.optim.base.SWDOptimizer`.
    """

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, **options):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, **options)

    def _check_hyperparameters(self, group: dict) -> None:
        check_range("lr", group["lr"], 0.0)
        check_range("momentum", group["momentum"], 0.0, 1.0)
        check_range("dampening", group["dampening"], 0.0, 1.0, high_inclusive=True)
        check_range("weight_decay", group["weight_decay"], 0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening=0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _active_state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _missing_step(self, state: dict) -> float:
        # a torch.optim.SGD checkpoint has a buffer but no step: the buffer is not new
        return 0.0 if state.get("momentum_buffer") is None else 1.0

    _reduces = False  # no global statistic: each bucket on its own
    _update_op = "sgd_update"

    def _decay_applied(self, group: dict, accum):
        lr_tensor, lr = self._lr_args(group, accum.device)
        amplification = (1 - group["dampening"]) / (1 - group["momentum"])
        return ((lr if lr_tensor is None else lr_tensor.double()) * amplification
                * group["weight_decay"])

    def _family_arguments(self, bucket: Bucket) -> dict:
        group = bucket.group
        return dict(momentum_buffers=bucket.lists.get("momentum_buffer", []),
                    momentum=float(group["momentum"]), dampening=float(group["dampening"]),
                    nesterov=bool(group["nesterov"]))
