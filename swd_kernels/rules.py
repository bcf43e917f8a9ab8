"""Hyperparameter rules from *Understanding and Scheduling Weight Decay* (Xie, Sato, Sugiyama,
arXiv:2011.11152), as three small functions.

The paper's view of weight decay is dynamical: with L2 regularization coupled to the learning
rate (``theta <- (1 - lr*wd)*theta - lr*grad``), SGD settles, in expectation, on the minimizer of
``L + wd/2 * ||theta||^2``, which on a quadratic with Hessian ``H`` lies
``-wd * (H + wd*I)^-1 theta*`` from the minimizer ``theta*`` of ``L`` (its Theorem 2 and
Corollary 1, checked in tests/test_theory.py). The rules below carry a tuned weight decay to
another batch size or training length. The paper's evidence is CIFAR-10/100 image
classification, so treat them as the starting point of a search, not as a guarantee.

- :func:`scale_lr` is the classic linear scaling rule ("Rule 1" in the paper): multiply the
  learning rate by k when the batch grows k-fold. The paper lists it for comparison.
- :func:`scale_weight_decay` is the paper's weight-decay linear scaling rule ("Rule 2"): for
  large-batch training, keep the learning rate and multiply the weight decay by k instead ("a
  novel weight-decay linear scaling rule for large-batch training that proportionally increases
  weight decay rather than the learning rate as the batch size increases", its abstract). One
  way to read it: a k-fold batch takes k times fewer steps per epoch, and with decay coupled to
  the learning rate each step shrinks the weights by ``lr * wd``, so ``wd * k`` keeps the decay
  per epoch.
- :func:`weight_decay_for_epochs`: the paper observes that "the optimal weight decay value
  tends to be zero given long enough training time" (its abstract). The function states that
  as an inverse relation, ``0.1 / epochs``: 5e-4 (the weight decay of the authors' published
  AdamS example) at 200 epochs.

``scale_weight_decay`` keeps the scale of the value it is given; ``weight_decay_for_epochs``
answers on the SGD / L2 / AdamS scale (docs/design.md §1, "The scale of weight_decay"), where
AdamW's value is ``1 / lr`` times larger.
"""
from __future__ import annotations

import math

# weight decay x epochs at the observed optimum
WEIGHT_DECAY_TIMES_EPOCHS = 0.1

__all__ = ["scale_weight_decay", "scale_lr", "weight_decay_for_epochs"]


def _number(name: str, value, positive: bool) -> float:
    """``value`` as a float, or a ValueError naming ``name``: a finite real number, > 0 when
    ``positive``, >= 0 otherwise (True/False are not numbers here)."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (value > 0 if positive else value >= 0):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _batch_ratio(batch_size, base_batch_size) -> float:
    """``batch_size / base_batch_size``, both positive whole numbers of examples."""
    for name, value in (("batch_size", batch_size), ("base_batch_size", base_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int (examples per step), got "
                             f"{value!r}")
    return batch_size / base_batch_size


def scale_weight_decay(weight_decay, batch_size, base_batch_size) -> float:
    """Rule 2 of the paper: the weight decay for ``batch_size`` when ``weight_decay`` was tuned
    at ``base_batch_size``, keeping the learning rate: ``weight_decay * k`` with
    ``k = batch_size / base_batch_size``.

    >>> scale_weight_decay(5e-4, batch_size=1024, base_batch_size=128)
    0.004
    """
    weight_decay = _number("weight_decay", weight_decay, positive=False)
    return weight_decay * _batch_ratio(batch_size, base_batch_size)


def scale_lr(lr, batch_size, base_batch_size) -> float:
    """Rule 1, the linear scaling rule, for comparison: the learning rate for ``batch_size``
    when ``lr`` was tuned at ``base_batch_size``: ``lr * k`` with
    ``k = batch_size / base_batch_size``.

    >>> scale_lr(0.1, batch_size=1024, base_batch_size=128)
    0.8
    """
    lr = _number("lr", lr, positive=False)
    return lr * _batch_ratio(batch_size, base_batch_size)


def weight_decay_for_epochs(epochs) -> float:
    """A starting weight decay (SGD / L2 / AdamS scale) for a run of ``epochs`` epochs:
    ``0.1 / epochs``, the paper's observed optimum falling inversely with training length
    (5e-4 at its 200-epoch CIFAR runs). For AdamW divide by its learning rate.

    >>> weight_decay_for_epochs(200)
    0.0005
    """
    epochs = _number("epochs", epochs, positive=True)
    return WEIGHT_DECAY_TIMES_EPOCHS / epochs
