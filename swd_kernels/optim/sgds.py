"""SGDS: heavy-ball SGD with stable weight decay, scaled by (1 - dampening) / (1 - momentum)."""
from __future__ import annotations

from torch.optim.optimizer import required

from .base import STEP_KEY, Bucket, SWDOptimizer, check_range


class SGDS(SWDOptimizer):
    r"""SGD (heavy ball, optional Nesterov) with Stable Weight Decay.

    ``theta *= 1 - (1 - dampening) / (1 - momentum) * lr * weight_decay``, then the update of
    :class:`torch.optim.SGD` without its L2 term. With ``momentum=0, weight_decay=0`` it is
    ``torch.optim.SGD``. ``lr`` has no default: give it here or in every param group.
    """

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, state_dtype=None, backend="auto"):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, backend=backend, state_dtype=state_dtype)

    def _validate_group(self, group: dict) -> None:
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

    def _run(self, buckets: list[Bucket], grad_scale, found_inf) -> None:
        for bucket in buckets:
            group, device = bucket.group, bucket.device
            lists = bucket.lists
            lr_tensor, lr = self._lr_args(group, device)
            self._op(bucket, "sgd_update")(
                bucket.params, bucket.grads, lists.get("momentum_buffer", []), lists[STEP_KEY],
                lr_tensor, lr, float(group["momentum"]), float(group["dampening"]),
                float(group["weight_decay"]), bool(group["nesterov"]),
                bool(group["maximize"]), self._on(grad_scale, device),
                self._on(found_inf, device))
