"""timm's optimizer factory: ``register()`` adds ``adams``, ``amsgrads``, ``sgds`` and ``adais``
to timm's registry, so ``timm.optim.create_optimizer_v2(model, "adams", ...)`` builds them with
timm's no-decay groups (biases and norm weights at weight_decay 0), layer decay and
``foreach=``.

    import swd_kernels.integrations.timm
    swd_kernels.integrations.timm.register()
    opt = timm.optim.create_optimizer_v2(model, "adams", lr=1e-3, weight_decay=5e-4)

Remember AdamS's weight_decay is on the L2/SGD scale (5e-4), not AdamW's (0.05).
"""
from __future__ import annotations

from .. import SGDS, AdaiS, AdamS, AMSGradS

NAMES = ("adams", "amsgrads", "sgds", "adais")


def register(registry=None) -> None:
    """Add the SWD optimizers to timm's optimizer registry (``registry``: timm's default one
    unless given). Calling it again changes nothing."""
    from timm.optim._optim_factory import OptimInfo, default_registry

    registry = default_registry if registry is None else registry
    infos = [
        OptimInfo(name="adams", opt_class=AdamS, has_betas=True,
                  description="Adam with stable weight decay (swd_kernels)"),
        OptimInfo(name="amsgrads", opt_class=AMSGradS, has_betas=True,
                  description="AMSGrad with stable weight decay (swd_kernels)"),
        OptimInfo(name="sgds", opt_class=SGDS, has_eps=False, has_momentum=True,
                  description="SGD (heavy ball) with stable weight decay (swd_kernels)"),
        OptimInfo(name="adais", opt_class=AdaiS, has_betas=True,
                  description="Adai with stable weight decay (swd_kernels)"),
    ]
    known = set(registry.list_optimizers())
    for info in infos:
        if info.name not in known or registry.get_optimizer_class(
                info.name, bind_defaults=False) is not info.opt_class:
            registry.register(info)
