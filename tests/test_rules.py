"""swd_kernels.rules: the paper's scaling rules give the values they state, and bad arguments get
a ValueError naming the argument."""
from __future__ import annotations

import doctest
import math

import pytest

from swd_kernels import rules
from swd_kernels.rules import scale_lr, scale_weight_decay, weight_decay_for_epochs


@pytest.mark.parametrize("batch_size, base_batch_size, factor", [
    (1024, 128, 8.0), (128, 128, 1.0), (64, 256, 0.25), (384, 128, 3.0), (100, 30, 10 / 3)])
def test_both_scaling_rules_multiply_by_the_batch_ratio(batch_size, base_batch_size, factor):
    assert math.isclose(scale_weight_decay(5e-4, batch_size, base_batch_size), 5e-4 * factor,
                        rel_tol=1e-15)
    assert math.isclose(scale_lr(0.1, batch_size, base_batch_size), 0.1 * factor,
                        rel_tol=1e-15)


def test_zero_weight_decay_stays_zero():
    assert scale_weight_decay(0.0, 512, 128) == 0.0


def test_scaling_there_and_back_is_the_identity():
    wd = scale_weight_decay(scale_weight_decay(3e-4, 2048, 256), 256, 2048)
    assert math.isclose(wd, 3e-4, rel_tol=1e-15)


@pytest.mark.parametrize("epochs, expected", [(200, 5e-4), (100, 1e-3), (1, 0.1), (12.5, 8e-3)])
def test_weight_decay_for_epochs_is_a_tenth_over_epochs(epochs, expected):
    assert math.isclose(weight_decay_for_epochs(epochs), expected, rel_tol=1e-15)


def test_weight_decay_for_epochs_falls_as_training_gets_longer():
    values = [weight_decay_for_epochs(e) for e in (10, 30, 90, 270)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert math.isclose(values[0] / values[-1], 27.0, rel_tol=1e-12)


def test_the_docstring_examples_hold():
    failed, attempted = doctest.testmod(rules, raise_on_error=False)
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("call, name", [
    (lambda: scale_weight_decay(-1e-4, 256, 128), "weight_decay"),
    (lambda: scale_weight_decay(float("nan"), 256, 128), "weight_decay"),
    (lambda: scale_weight_decay(float("inf"), 256, 128), "weight_decay"),
    (lambda: scale_weight_decay("5e-4", 256, 128), "weight_decay"),
    (lambda: scale_weight_decay(True, 256, 128), "weight_decay"),
    (lambda: scale_weight_decay(5e-4, 0, 128), "batch_size"),
    (lambda: scale_weight_decay(5e-4, -256, 128), "batch_size"),
    (lambda: scale_weight_decay(5e-4, 256.0, 128), "batch_size"),
    (lambda: scale_weight_decay(5e-4, 256, 0), "base_batch_size"),
    (lambda: scale_weight_decay(5e-4, 256, None), "base_batch_size"),
    (lambda: scale_lr(-0.1, 256, 128), "lr"),
    (lambda: scale_lr(float("nan"), 256, 128), "lr"),
    (lambda: scale_lr(0.1, 256, -128), "base_batch_size"),
    (lambda: scale_lr(0.1, True, 128), "batch_size"),
    (lambda: weight_decay_for_epochs(0), "epochs"),
    (lambda: weight_decay_for_epochs(-10), "epochs"),
    (lambda: weight_decay_for_epochs(float("inf")), "epochs"),
    (lambda: weight_decay_for_epochs("200"), "epochs"),
])
def test_bad_arguments_raise_a_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()
