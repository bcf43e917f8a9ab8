"""The per-tensor scalars of every Triton kernel, in one place and under one precision policy:
the policy of ``csrc/swd/rules.h`` (docs/design.md §6).

Every scalar that loses bits in fp32 is formed in float64 and rounded once to fp32: 1 - beta,
the bias corrections 1 - beta^t, the decay factor 1 - lr*wd/(v_bar + decay_eps)^p and the
step size. The hyperparameters they are formed from (lr, the betas, weight_decay,
decay_power, decay_eps, momentum, dampening) reach the kernel as doubles, as rules.h takes
them: Triton passes a Python float as fp32, so each travels as a hi/lo pair of fp32 arguments
(``split_double``, ``double_args``) that the kernel adds up in float64 (``as_double``), which
keeps 48 of the double's 53 bits. Values the element rules use only in fp32 (eps, AdaiS's
beta0, SGDS's momentum, beta2 where it multiplies v) are the pair's fp32 ``hi`` or a plain
fp32 argument: rules.h's ``static_cast<float>``.

rules.h forms the powers with double ``pow``. Here beta^t (t a whole step count) is
``pow_int``, by squaring in float64, and (v_bar + decay_eps)^-p is ``exp(-p * log(base))`` in
float64 (libdevice's ``__nv_log``/``__nv_exp`` on the GPU, numpy in the interpreter). Both
agree with double ``pow`` to ~1e-14 relative or better, far below the fp32 rounding that
follows. (p = 0.5 takes the same path: one formula for every p.)
"""
from __future__ import annotations

import struct

import triton
import triton.language as tl

_FLOAT32 = struct.Struct("f")


# ------------------------------------------------------------------ host: doubles as pairs ---

def split_double(x: float) -> tuple[float, float]:
    """``x`` as two fp32 kernel arguments whose sum keeps ~48 bits (Triton passes Python
    floats as fp32); the kernel rebuilds the double with ``as_double(hi, lo)``. ``hi`` is
    ``x`` rounded to fp32, the value rules.h's ``static_cast<float>`` gives."""
    hi = _FLOAT32.unpack(_FLOAT32.pack(x))[0]
    return hi, float(x - hi)


def double_args(**values: float) -> dict[str, float]:
    """Kernel arguments ``name`` and ``name_lo`` for every double ``name=value``."""
    args = {}
    for name, value in values.items():
        args[name], args[f"{name}_lo"] = split_double(float(value))
    return args


# ------------------------------------------------------------------ device: float64 pieces ---

@triton.jit
def as_double(hi, lo):
    return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)


@triton.jit
def one_minus(x64):
    """``1 - x`` formed in float64, then fp32 (rules.h ``one_minus_beta1`` etc.): in fp32,
    1 - 0.999 is off by 1.3e-5 relative, enough to fail the fp32 oracle."""
    return (1.0 - x64).to(tl.float32)


@triton.jit
def pow_int(base, exponent):
    """``base ** exponent`` in float64 for whole exponents in [0, 2^32), by squaring (step
    counts are whole numbers). ``exponent`` may be a scalar or a block."""
    e = exponent.to(tl.int64)
    # 1.0 shaped like the exponent and formed from it (t * 0.0 is +0.0 for a step count, and
    # is not folded without fast-math): were it a constant, the squarings of the base below
    # would not depend on the exponent, and in a loop over chunks (the one-launch step) the
    # compiler hoists them out and keeps all 32 powers live: 196-231 registers a thread on
    # sm_90 at 8 warps, against 64-101 so.
    result = exponent.to(tl.float64) * 0.0 + 1.0
    power = result * base
    for _ in range(32):
        result = tl.where((e & 1) != 0, result * power, result)
        power = power * power
        e = e >> 1
    return result


@triton.jit
def one_minus_pow(beta, t):
    """``1 - beta^t`` in float64 (rules.h ``one_minus_pow``): the bias correction of step t."""
    return 1.0 - pow_int(beta, t)


@triton.jit
def decay_scale(v_bar, decay_power, decay_eps):
    """``(v_bar + decay_eps)^-p`` in float64 (rules.h ``decay_scale``): 1 when p == 0 (exactly
    AdamW), 0 when the base is 0 (every grad so far exactly zero: no decay rather than inf)."""
    base = v_bar + decay_eps
    safe = tl.where(base > 0.0, base, 1.0)
    scale = tl.exp(-decay_power * tl.log(safe))
    scale = tl.where(base > 0.0, scale, 0.0)
    return tl.where(decay_power == 0.0, 1.0, scale)


@triton.jit
def next_v_sum(v_sum, beta2, grad_sq_sum):
    """The linear identity of docs/design.md §3, in float64: the new sum of a tensor's
    ``exp_avg_sq`` from its previous sum and this step's sum of squared grads,
    S = beta2 * S_prev + (1 - beta2) * sum(g^2)."""
    return beta2 * v_sum + (1.0 - beta2) * grad_sq_sum


@triton.jit
def clip_term(grad_sq_sum, beta2, bias_correction2):
    """A tensor's share of accum's clip term (step_scalars.h ``clip_term``), float64: the part
    of its v_hat sum that this step's grads add through the linear identity,
    (1 - beta2) * sum(g^2) / (1 - beta2^t). Clipping the grads by c scales it by c^2."""
    return (1.0 - beta2) * grad_sq_sum / bias_correction2


# ------------------------------------------------------------------ per-tensor scalars -------

@triton.jit
def adam_scalars(lr, t, v_bar, beta1, beta2, weight_decay, decay_power, decay_eps):
    """rules.h ``adam_scalars`` with its ``decay_scale`` (float64 in, fp32 out): the decay
    factor, the step size lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 - beta1 and 1 - beta2."""
    # This order of the float64 work is the one that kept every adam_update variant at its
    # earlier register count on sm_90 under both Triton 3.6 and 3.8 (others cost up to 10
    # registers a thread under one of them; see tests/test_triton_compile.py).
    bias_correction1 = one_minus_pow(beta1, t)
    scale = decay_scale(v_bar, decay_power, decay_eps)
    bias_correction2 = one_minus_pow(beta2, t)
    decay = (1.0 - lr * weight_decay * scale).to(tl.float32)
    step_size = (lr / bias_correction1).to(tl.float32)
    sqrt_bc2 = tl.sqrt(bias_correction2).to(tl.float32)
    return decay, step_size, sqrt_bc2, one_minus(beta1), one_minus(beta2)


@triton.jit
def adai_scalars(lr, t, v_bar, beta2, weight_decay):
    """rules.h ``adai_scalars`` (float64 in, fp32 out): the decay factor 1 - lr*wd, lr,
    1 - beta2^t, v_bar and 1 - beta2."""
    decay = (1.0 - lr * weight_decay).to(tl.float32)
    bias_correction2 = one_minus_pow(beta2, t).to(tl.float32)
    return decay, lr.to(tl.float32), bias_correction2, v_bar.to(tl.float32), one_minus(beta2)


@triton.jit
def sgd_scalars(lr, momentum, dampening, weight_decay):
    """rules.h ``sgd_scalars`` (float64 in, fp32 out): the decay factor
    1 - (1 - dampening) / (1 - momentum) * lr * wd, lr and 1 - dampening."""
    decay = (1.0 - (1.0 - dampening) / (1.0 - momentum) * lr * weight_decay).to(tl.float32)
    return decay, lr.to(tl.float32), one_minus(dampening)
