"""swd_kernels: fused Stable Weight Decay optimizers (AdamS, AMSGradS, SGDS, AdaiS)."""
from . import ops
from .backends import available_backends
from .optim import SGDS, AdaiS, AdamS, AMSGradS
from .weight_decay import weight_decay_from_adamw

__all__ = ["AdamS", "AMSGradS", "SGDS", "AdaiS", "available_backends", "ops",
           "weight_decay_from_adamw"]
__version__ = "0.1.0"
