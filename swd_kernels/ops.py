"""The op contract: one schema per op, declared once, instantiated for every backend.

Every backend gets its own op namespace ``swd_<backend>`` (``swd_torch``, ``swd_native``,
``swd_triton``) holding the same schemas, so the optimizers can pick a backend per device at
run time while each op stays a real ``torch.library`` custom op: mutation annotations,
a fake (meta) implementation for ``torch.compile``, and ``opcheck``-clean.

Meaning of the ops (docs/design.md §1, §3, §4). A *bucket* is the tensors of one param group
that share a device, a param dtype and a state dtype; every list argument of one call is such
a bucket, index ``i`` of each list belonging to the same parameter. Math is fp32 for every
storage dtype.

``accum`` is a float64 tensor of ``ACCUM_SIZE`` = 4 numbers on the bucket's device:
``[sum of v_hat, element count, sum of g^2, clip term]``. The optimizer zeroes it once per
step; every ``adam_reduce`` of that step *adds* its bucket's share; every update reads only
``v_bar = accum[0] / accum[1]`` (0 when the count is 0). ``accum[2]`` gives the global grad
norm (fused clipping, ``optimizer.stats``) and ``accum[3]`` lets the optimizer finish the
running sums once the clip coefficient is known (docs/design.md §3).

``adam_reduce`` (pass 1), per tensor i with ``t = state_steps[i] + 1`` (not written):
  - ``amsgrad=False``: ``sq = sum((g / grad_scale)^2)``; ``S = beta2*v_sums[i] + (1-beta2)*sq``
    is the new sum of ``exp_avg_sq`` (the linear identity); ``accum[0] += S / (1-beta2^t)``;
    ``v_sums[i] = S`` unless found_inf; ``accum[3] += (1-beta2)*sq / (1-beta2^t)``.
    Reads only the grad.
  - ``amsgrad=True``: forms ``v`` and ``vmax = max(max_exp_avg_sq, v)`` without writing them,
    ``accum[0] += sum(vmax) / (1-beta2^t)``. ``v_sums`` is ignored (may be empty); ``accum[3]``
    is not changed.
  ``accum[1] += numel``; ``accum[2] += sq`` (both amsgrad values). Sums are taken in a fixed
  order (bitwise repeatable on one device and build). With ``found_inf`` nonzero nothing but
  ``accum`` may change.
``adam_update`` (pass 2): the AdamS/AMSGradS update of docs/design.md §1,
  ``state_steps[i] = t``. With half-precision state (bf16/fp16 ``exp_avg_sqs``) and
  ``amsgrad=False`` it also sets ``v_sums[i]`` to the float64 sum of the ``exp_avg_sq`` it
  stored, rounding included (unless found_inf): rounded state drifts from the linear identity
  (in bf16, 0.999 * v rounds back to v: 5% after 1,000 steps at beta2 = 0.999, and AdaiS's
  inertia reads v_hat / v_bar), and the update holds every stored value anyway, so keeping
  the sums exact costs no extra pass (docs/design.md §3). Otherwise ``v_sums``
  is not written and may be empty. Same schema as ``adam_step``.
``adam_step``: ``adam_reduce`` then ``adam_update`` on one bucket (one launch where a backend
  can do it); the caller uses it only when the bucket is the step's only one.
``adai_update``: the AdaiS update; its reduction is ``adam_reduce`` with ``amsgrad=False``.
  ``v_sums`` as in ``adam_update``.
``sgd_update``: the SGDS update; ``momentum_buffers`` is empty when ``momentum == 0``; a tensor
  whose ``state_steps[i] == 0`` takes ``buf = g``.

Layout: index ``i`` of the param, grad and state lists share shape and strides and are dense
(no gaps or overlaps), so a kernel may walk them as flat arrays; ``state_steps`` are 0-dim
float32 tensors; states may have another dtype than params (``state_dtype``). A 0-element
tensor is allowed. All tensors of one call are on one device.

All updates: ``lr_tensor`` (0-dim, any float dtype, on the bucket's device) wins over ``lr``;
grads are divided by ``grad_scale`` and negated under ``maximize`` but never written; a nonzero
``found_inf`` leaves every argument untouched (steps included).
"""
from __future__ import annotations

import torch

BACKEND_NAMES = ("native", "triton", "torch")

# accum: [sum of v_hat, element count, sum of g^2, sum of (1-beta2)*g^2 / (1-beta2^t)]
ACCUM_SIZE = 4
VHAT_SUM, COUNT, GRAD_SQ_SUM, CLIP_TERM = range(ACCUM_SIZE)

_OPTIONAL_AMP = "Tensor? grad_scale, Tensor? found_inf"
_ADAM_HPARAMS = (
    "Tensor? lr_tensor, float lr, float beta1, float beta2, float weight_decay, float eps, "
    "float decay_power, float decay_eps, bool amsgrad, bool maximize, " + _OPTIONAL_AMP
)

SCHEMAS = {
    "adam_reduce": (
        "(Tensor[] grads, Tensor[] exp_avg_sqs, Tensor[] max_exp_avg_sqs, Tensor[] state_steps, "
        "Tensor(a!)[] v_sums, Tensor(b!) accum, float beta2, bool amsgrad, "
        + _OPTIONAL_AMP + ") -> ()"
    ),
    "adam_update": (
        "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, Tensor(f!)[] v_sums, "
        "Tensor accum, " + _ADAM_HPARAMS + ") -> ()"
    ),
    "adam_step": (
        "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, Tensor(f!)[] v_sums, "
        "Tensor(g!) accum, " + _ADAM_HPARAMS + ") -> ()"
    ),
    "adai_update": (
        "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] beta1_prods, Tensor(e!)[] state_steps, Tensor(f!)[] v_sums, "
        "Tensor accum, Tensor? lr_tensor, "
        "float lr, float beta0, float beta2, float weight_decay, float eps, bool maximize, "
        + _OPTIONAL_AMP + ") -> ()"
    ),
    "sgd_update": (
        "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
        "Tensor(c!)[] state_steps, Tensor? lr_tensor, float lr, float momentum, "
        "float dampening, float weight_decay, bool nesterov, bool maximize, "
        + _OPTIONAL_AMP + ") -> ()"
    ),
}

# Keyword names of each op, in schema order, for callers that build argument dicts.
ARG_NAMES = {
    name: [a.name for a in torch._C.parse_schema(f"swd::{name}{schema}").arguments]
    for name, schema in SCHEMAS.items()
}

_libraries: dict[str, torch.library.Library] = {}


def update_writes_v_sums(exp_avg_sqs: list[torch.Tensor], amsgrad: bool) -> bool:
    """Whether an update op sets ``v_sums`` to the sums of the ``exp_avg_sq`` it stores:
    with half-precision state and without amsgrad (see the module docstring)."""
    return (not amsgrad and bool(exp_avg_sqs)
            and exp_avg_sqs[0].dtype in (torch.bfloat16, torch.float16))


def check_update_v_sums(v_sums: list, exp_avg_sqs: list[torch.Tensor], amsgrad: bool) -> None:
    """An update that writes ``v_sums`` needs one per parameter (the native ops give the same
    message from csrc/swd/op_checks.h)."""
    if update_writes_v_sums(exp_avg_sqs, amsgrad) and len(v_sums) != len(exp_avg_sqs):
        raise RuntimeError(f"v_sums has {len(v_sums)} tensors but there are "
                           f"{len(exp_avg_sqs)} parameters; pass one per parameter")


def check_accum(accum: torch.Tensor, device: torch.device) -> None:
    """The contract's accumulator: ``ACCUM_SIZE`` contiguous float64 numbers on the bucket's
    device (the native ops give the same message from csrc/swd/op_checks.h)."""
    if not (accum.dtype == torch.float64 and accum.numel() == ACCUM_SIZE
            and accum.is_contiguous() and accum.device == device):
        raise RuntimeError(
            f"accum must be a contiguous float64 tensor of {ACCUM_SIZE} elements [sum of "
            f"v_hat, count, sum of g^2, clip term] on {device}, got {accum.dtype} of shape "
            f"{tuple(accum.shape)} on {accum.device}")


def namespace(backend: str) -> str:
    return f"swd_{backend}"


def _fake(*args, **kwargs) -> None:
    # Every op only mutates its inputs in place: nothing to allocate under FakeTensor.
    return None


def _compose_adam_step(backend: str):
    reduce_op = getattr(getattr(torch.ops, namespace(backend)), "adam_reduce")
    update_op = getattr(getattr(torch.ops, namespace(backend)), "adam_update")

    def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                  accum, lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                  amsgrad, maximize, grad_scale, found_inf):
        reduce_op(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                  amsgrad, grad_scale, found_inf)
        update_op(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                  accum, lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                  amsgrad, maximize, grad_scale, found_inf)

    return adam_step


def define(backend: str) -> torch.library.Library:
    """Declare every schema in ``swd_<backend>`` with its fake implementation (idempotent).

    ``adam_step`` gets a composite default (reduce, then update) that a backend overrides per
    device by registering its own kernel for that dispatch key.
    """
    if backend in _libraries:
        return _libraries[backend]
    ns = namespace(backend)
    lib = torch.library.Library(ns, "DEF")
    for name, schema in SCHEMAS.items():
        lib.define(name + schema)
        torch.library.register_fake(f"{ns}::{name}", _fake, lib=lib)
    lib.impl("adam_step", _compose_adam_step(backend), "CompositeExplicitAutograd")
    _libraries[backend] = lib
    return lib


def get(backend: str, name: str):
    """The op ``name`` of ``backend`` (an OpOverloadPacket)."""
    return getattr(getattr(torch.ops, namespace(backend)), name)


for _backend in BACKEND_NAMES:
    define(_backend)
