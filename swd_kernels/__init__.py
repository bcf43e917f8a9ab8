"""swd_kernels: fused Stable Weight Decay optimizers (AdamS, AMSGradS, SGDS, AdaiS)."""
from . import ops, rules
from .backends import available_backends
from .optim import SGDS, AdaiS, AdamS, AMSGradS
from .rules import scale_lr, scale_weight_decay, weight_decay_for_epochs
from .weight_decay import weight_decay_from_adamw

__all__ = ["AdamS", "AMSGradS", "SGDS", "AdaiS", "available_backends", "ops", "rules",
           "scale_lr", "scale_weight_decay", "weight_decay_for_epochs",
           "weight_decay_from_adamw"]
__version__ = "0.1.0"
