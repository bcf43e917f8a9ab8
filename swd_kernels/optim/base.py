"""The small base every SWD optimizer stands on: validation, buckets, the global mean, AMP,
state_dict. A family file says only how its state looks and which ops one step calls."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch.optim.optimizer import required

from .. import backends, distributed, ops
from . import clipping
from .step_stats import StepStats

STEP_KEY = "step"
# The float64 running sum of a tensor's exp_avg_sq (0-dim, on its device) that the reduction
# keeps by the linear identity. It lives in the state (and so in state_dict), so save -> load
# -> continue is bitwise the uninterrupted run; a checkpoint without it (torch's AdamW, or a
# shard of a sharded param, whose local sum a checkpoint can't keep apart) gets it recomputed.
V_SUM_KEY = "exp_avg_sq_sum"


def check_range(name: str, value, low: float, high: float | None = None,
                high_inclusive: bool = False, fix: str = "") -> None:
    """Raise ValueError naming ``name`` unless ``low <= value`` (and ``value < high``)."""
    if torch.is_tensor(value):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(f"{name} given as a tensor must be a one-element floating tensor, "
                             f"got shape {tuple(value.shape)} and dtype {value.dtype}")
        if value.device.type != "cpu":  # reading a device value would sync: trust it
            return
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    above = value <= high if high_inclusive else value < high if high is not None else True
    if not (value >= low and above):
        bound = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high}"
        raise ValueError(f"Invalid {name}: {value!r}; it must be >= {low}{bound}. {fix}".rstrip())


def is_dense(t: torch.Tensor) -> bool:
    """Elements fill a block of storage without gaps or overlaps, in some dimension order
    (contiguous, channels_last, a transpose ...): a kernel may walk it as a flat array."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides on every dimension longer than 1 (the ones that matter)."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), b.shape) if n > 1)


@dataclass
class Bucket:
    """The tensors of one param group that share a device, a param dtype and a state dtype:
    the unit one op call works on (local shards for sharded params). A tensor a kernel can't
    walk as a flat array is handed over as a dense copy, listed in ``write_back``."""
    group: dict
    device: torch.device
    dtype: torch.dtype
    owners: list = field(default_factory=list)  # the user's params, in order
    params: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    states: list = field(default_factory=list)
    write_back: list = field(default_factory=list)  # (user's tensor, dense working copy)
    copied_grads: bool = False  # a grad was re-laid out to match its param
    lists: dict = field(default_factory=dict)  # state key -> list over the bucket, and steps


@dataclass
class Plan:
    """The buckets of the last step, reused while nothing they depend on changed."""
    key: tuple  # ids of the params with grads, and each group's state keys
    state: dict  # the optimizer's state dict object they were built from
    buckets: list
    grad_signatures: list  # (dtype, device, stride, shape) of each grad
    positions: list  # per bucket, where its owners' grads are in the list of grads
    sharded: bool  # whether any grad is a DTensor (its kernels take the local shard)


def _signatures(grads: list[torch.Tensor]) -> list | None:
    """What a plan's buckets depend on in each grad: (dtype, device, strides, shape); None
    when a grad has no strides (sparse). One list comparison checks a whole step's grads
    (161 grads: 59 us, where a check per grad took 81 us on this project's 2-core CPU)."""
    try:
        return [(g.dtype, g.device, g.stride(), g.shape) for g in grads]
    except RuntimeError:  # a sparse grad: the checks of a new plan say what is wrong
        return None


class SWDOptimizer(torch.optim.Optimizer):
    """Base of AdamS, AMSGradS, SGDS and AdaiS (not used directly).

    Keyword options every one of them takes:

    - ``state_dtype``: dtype of the moments (None: the param's), e.g. ``torch.float32`` for
      bf16 params.
    - ``backend``: ``"auto"`` (default), ``"native"``, ``"triton"`` or ``"torch"``; the
      ``SWD_KERNELS_BACKEND`` environment variable wins. ``optimizer.backends`` tells which
      one runs each (device, dtype).
    - ``unscale_in_step`` (default True): a GradScaler hands its scale and inf flag to the step,
      whose kernels unscale the grads they read (``.grad`` is never written) and skip a step
      with an inf/NaN. False: the scaler unscales ``.grad`` itself first, as for an unfused
      torch optimizer; Lightning and Fabric need that to clip gradients under AMP.
    - ``foreach``, ``fused``, ``capturable``: torch's keywords, accepted so that code written
      for torch's optimizers (timm's factory, ...) runs unchanged. They change nothing: every
      backend is already multi-tensor and fused, and every step is capturable (no host sync).
    - ``differentiable``: only False; the kernels update in place outside autograd.
    - ``max_grad_norm`` (default None: off): clip the grads as
      ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` would (L2 norm over every
      param with a grad, across groups, devices and ranks; unscaled under a GradScaler)
      without writing ``.grad``; AdamS and AdaiS get the norm from the pass they already make.
    - ``partition_group``: the process group across which the optimizers' params are
      disjoint, when a framework hands each rank a subset of the params as plain tensors
      (``ZeroRedundancyOptimizer``, DeepSpeed ZeRO 1/2). The step's statistics (v_bar, the
      grad norm) are then summed over it, in one collective. Sharded (DTensor) params need no
      keyword: their group is known.

    After a step, ``optimizer.stats`` holds device tensors (see :attr:`stats`).
    """

    # GradScaler hands over grad_scale and found_inf and skips its own unscale and sync
    # (an instance may say otherwise: ``unscale_in_step=False``).
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults: dict, *, state_dtype=None, backend: str = "auto",
                 unscale_in_step: bool = True, foreach: bool | None = None,
                 fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, max_grad_norm: float | None = None,
                 partition_group=None):
        backends.validate_request(backend)
        clipping.check_max_grad_norm(max_grad_norm)
        if state_dtype is not None and state_dtype not in (torch.float32, torch.float16,
                                                           torch.bfloat16, torch.float64):
            raise TypeError(f"state_dtype must be None (the param's dtype) or a floating "
                            f"dtype such as torch.float32, got {state_dtype!r}")
        if not isinstance(unscale_in_step, bool):
            raise TypeError(f"unscale_in_step must be True or False, got {unscale_in_step!r}")
        self.backend = backend
        self.state_dtype = state_dtype
        self._step_supports_amp_scaling = unscale_in_step
        self.max_grad_norm = max_grad_norm
        self._accums: dict[torch.device, torch.Tensor] = {}
        self._stats = StepStats()
        self._plan: Plan | None = None
        self._resolved: dict[tuple, str] = {}
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=capturable,
                        differentiable=differentiable)
        super().__init__(params, defaults)
        self._partitioned = partition_group is not None
        self._process_group = distributed.statistics_group(
            [p for group in self.param_groups for p in group["params"]], partition_group)
        for device, dtype in {(p.device, p.dtype) for group in self.param_groups
                              for p in group["params"]}:
            # an unavailable backend fails here, not later; resolving now also keeps the
            # import machinery out of a step that torch.compile traces (fullgraph=True)
            self._backend_for(device, dtype)

    @property
    def backends(self) -> dict[tuple[torch.device, torch.dtype], str]:
        """Which backend runs the params of each (device, dtype) this optimizer holds
        (``backend`` is what was asked for, e.g. ``"auto"``)."""
        return {(device, dtype): self._backend_for(device, dtype)
                for device, dtype in dict.fromkeys(
                    (p.device, p.dtype) for group in self.param_groups
                    for p in group["params"])}

    # ----- validation -------------------------------------------------------------------
    def _validate_group(self, group: dict) -> None:
        """Raise a clear error for a bad value in ``group`` (defaults filled in)."""
        if group.get("differentiable"):
            raise ValueError(f"differentiable=True is not supported: {type(self).__name__}'s "
                             f"kernels update in place outside autograd. Leave it False.")
        self._check_hyperparameters(group)

    def _check_hyperparameters(self, group: dict) -> None:
        """The family's own checks of lr, betas, eps, weight_decay ..."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        if merged.get("lr") is not required:
            self._validate_group(merged)
        params = param_group["params"]
        params = [params] if torch.is_tensor(params) else list(params)
        name = type(self).__name__
        for index, p in enumerate(params):
            if not torch.is_tensor(p):
                continue
            if p.is_complex():
                raise TypeError(f"{name} handles real parameters only, got a complex one "
                                f"(dtype {p.dtype}); view it as real (torch.view_as_real) to "
                                f"optimize it")
            if not p.is_floating_point():
                raise TypeError(f"{name} handles floating-point parameters only, got one of "
                                f"dtype {p.dtype} (shape {tuple(p.shape)}); integer tensors "
                                f"have no gradients: register them as buffers, not "
                                f"parameters")
            if any(p is q for q in params[:index]):
                raise ValueError(f"the same tensor (shape {tuple(p.shape)}) is given twice in "
                                 f"one param group; {name} would count its step twice. Pass "
                                 f"each parameter once (e.g. dict.fromkeys(params) keeps the "
                                 f"first of each, or model.parameters() deduplicates shared "
                                 f"weights)")
        super().add_param_group(param_group)

    def _check_grads(self) -> None:
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                where = f"(param group {index}, parameter of shape {tuple(p.shape)})"
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       f"gradients {where}: use dense grads, e.g. "
                                       f"nn.Embedding(..., sparse=False)")
                if g.is_complex():
                    raise RuntimeError(f"complex gradients are not supported {where}")
                if g.device != p.device or g.dtype != p.dtype or g.shape != p.shape:
                    raise RuntimeError(
                        f"grad {where} must match its param in device, dtype and shape: got "
                        f"{g.device}/{g.dtype}/{tuple(g.shape)} for "
                        f"{p.device}/{p.dtype}/{tuple(p.shape)}")

    # ----- state ------------------------------------------------------------------------
    def _state_dtype_for(self, p: torch.Tensor) -> torch.dtype:
        return self.state_dtype or p.dtype

    # the value a new state tensor starts at (0 unless named here)
    _initial_values: dict[str, float] = {}

    def _fill_state(self, p: torch.Tensor, group: dict, state: dict) -> None:
        """Create the state entries ``p`` lacks: all of them on its first step, or the ones a
        checkpoint from torch or another option setting did not have."""
        if state.get(STEP_KEY) is None:
            state[STEP_KEY] = torch.full((), self._missing_step(state), dtype=torch.float32,
                                         device=p.device)
        for key in self._active_state_keys(group):
            if state.get(key) is None:
                state[key] = torch.full_like(p, self._initial_values.get(key, 0.0),
                                             dtype=self._state_dtype_for(p),
                                             memory_format=torch.preserve_format)
        if self._keeps_v_sum(group) and state.get(V_SUM_KEY) is None:
            state[V_SUM_KEY] = distributed.local(state["exp_avg_sq"]).sum(dtype=torch.float64)

    def _missing_step(self, state: dict) -> float:
        """The step count of a tensor whose state has no ``step`` (0 on its first step)."""
        return 0.0

    def _active_state_keys(self, group: dict) -> tuple[str, ...]:
        """The keys of the param-shaped state tensors ``group``'s options call for."""
        raise NotImplementedError

    def _keeps_v_sum(self, group: dict) -> bool:
        """Whether ``group``'s reduction uses the running sums of exp_avg_sq."""
        return False

    def _buckets(self) -> list[Bucket]:
        """Group every param with a grad into buckets, creating missing state (after all
        checks, so a bad input changes nothing). The grouping is kept as a plan and reused
        while the same params have grads of the same layout: the step's host time then stays
        near torch's fused AdamW (1,000 tensors: 6.3 ms to build, well under 1 ms to reuse)."""
        if torch.compiler.is_compiling():  # a trace keeps no plan: it would guard on it
            return self._build_buckets()
        with_grad = [p for group in self.param_groups for p in group["params"]
                     if p.grad is not None]
        key = (tuple(map(id, with_grad)),
               tuple(self._active_state_keys(group) for group in self.param_groups))
        plan = self._plan
        if plan is not None and plan.key == key and plan.state is self.state:
            grads = [p.grad for p in with_grad]
            if _signatures(grads) == plan.grad_signatures:
                for bucket, positions in zip(plan.buckets, plan.positions):
                    bucket.grads = [grads[i] for i in positions]
                    if plan.sharded:
                        bucket.grads = [distributed.local(g) for g in bucket.grads]
                return plan.buckets
        self._plan = None
        buckets = self._build_buckets()
        if not any(b.write_back or b.copied_grads for b in buckets):
            index = {id(p): i for i, p in enumerate(with_grad)}
            grads = [p.grad for p in with_grad]
            self._plan = Plan(key, self.state, buckets, _signatures(grads),
                              [[index[id(p)] for p in b.owners] for b in buckets],
                              any(map(distributed.is_sharded, grads)))
        return buckets

    def _init_group(self) -> None:
        """Check the grads and create every missing state. torch.compile runs a method of this
        name eagerly while it traces a step (as for torch's own optimizers), so the traced
        step finds its state in place and the first compiled step is the same graph as the
        later ones."""
        self._check_grads()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._fill_state(p, group, self.state[p])
                    self._accum(p.device)
        self._stats.prepare(self._home_device(), len(self.param_groups))

    def _build_buckets(self) -> list[Bucket]:
        self._check_grads()
        buckets: dict[tuple, Bucket] = {}
        for index, group in enumerate(self.param_groups):
            keys = self._active_state_keys(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                self._fill_state(p, group, state)
                key = (index, p.device, p.dtype, self._state_dtype_for(p))
                bucket = buckets.setdefault(key, Bucket(group, p.device, p.dtype))
                param, grad = distributed.local(p), distributed.local(p.grad)
                tensors = [distributed.local(state[k]) for k in keys]
                if is_dense(param) and all(same_layout(t, param) for t in tensors):
                    if not same_layout(grad, param):  # kernels walk all of them as flat arrays
                        grad = torch.empty_like(param).copy_(grad)
                        bucket.copied_grads = True
                else:  # e.g. a view into a larger tensor: work on dense copies, write them back
                    originals = [param, *tensors]
                    param, grad = param.contiguous(), grad.contiguous()
                    tensors = [t.contiguous() for t in tensors]
                    bucket.write_back.extend(
                        (dst, work) for dst, work in zip(originals, [param, *tensors])
                        if work is not dst)
                bucket.owners.append(p)
                bucket.params.append(param)
                bucket.grads.append(grad)
                bucket.states.append((state, tensors))
        for bucket in buckets.values():
            bucket.lists = self._lists(bucket)
        return list(buckets.values())

    def _lists(self, bucket: Bucket) -> dict[str, list]:
        """The bucket's state as one list per key, plus the step counts."""
        keys = self._active_state_keys(bucket.group)
        lists = {k: [tensors[i] for _, tensors in bucket.states] for i, k in enumerate(keys)}
        lists[STEP_KEY] = [state[STEP_KEY] for state, _ in bucket.states]
        return lists

    @staticmethod
    def _finish(bucket: Bucket) -> None:
        for original, working in bucket.write_back:
            original.copy_(working)

    # ----- the global mean --------------------------------------------------------------
    def _accum(self, device: torch.device) -> torch.Tensor:
        """This device's accumulator (``ops.ACCUM_SIZE`` float64 numbers: the sum of v_hat,
        the count, the sum of g^2, the clip term), allocated once (graph-safe)."""
        if device not in self._accums:
            self._accums[device] = torch.zeros(ops.ACCUM_SIZE, dtype=torch.float64,
                                               device=device)
        return self._accums[device]

    @staticmethod
    def _bucket_v_sums(bucket: Bucket) -> list[torch.Tensor]:
        """The bucket's running sums of exp_avg_sq, which the ops keep up to date in place
        (the reduction by the linear identity; with half-precision state the update sets them
        to the sums of what it stored, ops.py)."""
        return [state[V_SUM_KEY] for state, _ in bucket.states]

    def _global_mean(self, buckets: list[Bucket], arguments: list[dict], devices: list,
                     found_inf, fuse_clip: bool) -> None:
        """Pass 1 over every bucket: afterwards each device's accumulator holds the step's
        totals over all buckets, devices and ranks. ``fuse_clip``: clip with the norm these
        reductions give, correcting what they formed from the unclipped grads."""
        for device in devices:
            self._accum(device).zero_()
        decayed = [torch._foreach_mul(args["v_sums"], args["beta2"]) if fuse_clip else []
                   for args in arguments]
        for bucket, args in zip(buckets, arguments):
            self._call(bucket, "adam_reduce", args)
        self._combine_accums(devices)
        if not fuse_clip:
            return
        coefficients, shrinks = {}, {}
        for device in devices:
            accum = self._accum(device)
            coefficients[device] = clipping.clip_coefficient(accum, self.max_grad_norm)
            shrinks[device] = clipping.shrink_factor(coefficients[device], found_inf)
            clipping.clip_vhat_sum(accum, shrinks[device])
        for bucket, args, decayed_sums in zip(buckets, arguments, decayed):
            clipping.clip_running_sums(args["v_sums"], decayed_sums, shrinks[bucket.device])
        self._clip_grads(buckets, arguments, coefficients)

    def _clip_first(self, buckets: list[Bucket], arguments: list[dict],
                    devices: list) -> dict:
        """Clipping by a pass of its own over the grads, before anything reads them; returns
        each device's sum of g^2 (unclipped), which the step's statistics report."""
        for device in devices:
            self._accum(device).zero_()
        for bucket, args in zip(buckets, arguments):
            clipping.add_grad_sq_sums(self._accum(bucket.device), bucket.grads,
                                      args["grad_scale"])
        self._combine_accums(devices)
        self._clip_grads(buckets, arguments, {
            device: clipping.clip_coefficient(self._accum(device), self.max_grad_norm)
            for device in devices})
        return {device: self._accum(device)[ops.GRAD_SQ_SUM].clone() for device in devices}

    @staticmethod
    def _clip_grads(buckets: list[Bucket], arguments: list[dict], coefficients: dict) -> None:
        """Let every later op read the clipped grads: ``g / (grad_scale / c)``."""
        for bucket, args in zip(buckets, arguments):
            args["grad_scale"] = clipping.clipped_grad_scale(args["grad_scale"],
                                                             coefficients[bucket.device])

    def _combine_accums(self, devices) -> None:
        """Make every device's accumulator hold the total over all devices and ranks."""
        if len(devices) > 1:
            first = devices[0]
            total = sum(self._accum(d).to(first) for d in devices)
            for d in devices:
                self._accum(d).copy_(total)
        if self._process_group is not None:
            for d in devices:
                distributed.all_reduce_statistics(self._accum(d), self._process_group)

    def vhat_mean(self) -> torch.Tensor:
        """v_bar of the last step, the global mean of v_hat, as a 0-dim float64 tensor on the
        first param's device (no host sync: read it when you choose to sync), e.g. for
        :func:`swd_kernels.weight_decay_from_adamw`."""
        if not self._accums:
            raise RuntimeError(f"{type(self).__name__}.vhat_mean() is known after the first "
                               f"step() with gradients; call it after a step")
        accum = next(iter(self._accums.values()))
        return accum[0] / accum[1]

    # ----- AMP and the step -------------------------------------------------------------
    def _amp_args(self, grad_scale, found_inf):
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        return grad_scale, found_inf

    @staticmethod
    def _on(value, device):
        """An optional one-element device value (GradScaler's are shaped (1,)) as a 0-dim
        tensor on ``device``, moved asynchronously."""
        if value is None:
            return None
        return value.to(device=device, non_blocking=True).reshape(())

    @staticmethod
    def _lr_args(group: dict, device) -> tuple:
        """``(lr_tensor, lr)`` for an op: a tensor lr moves to the device; a float lr stays a
        float in eager mode, but under torch.compile it becomes a float64 tensor made inside
        the graph, because a custom op's ``float`` argument specializes on its value (a
        scheduler's new lr each step would recompile each step)."""
        lr = group["lr"]
        if torch.is_tensor(lr):
            return lr.to(device=device, non_blocking=True).reshape(()), 0.0
        if torch.compiler.is_compiling():
            return torch.full((), lr, dtype=torch.float64, device=device), 0.0
        return None, float(lr)

    def _arguments(self, bucket: Bucket, grad_scale, found_inf) -> dict:
        """Every argument the family's ops take for ``bucket``, by schema name: the ones all
        families share, and the family's own (``_family_arguments``)."""
        group, device = bucket.group, bucket.device
        lr_tensor, lr = self._lr_args(group, device)
        return dict(
            params=bucket.params, grads=bucket.grads, state_steps=bucket.lists[STEP_KEY],
            lr_tensor=lr_tensor, lr=lr, weight_decay=float(group["weight_decay"]),
            maximize=bool(group["maximize"]), grad_scale=self._on(grad_scale, device),
            found_inf=self._on(found_inf, device), **self._family_arguments(bucket))

    def _family_arguments(self, bucket: Bucket) -> dict:
        """The family's own op arguments for ``bucket`` (state lists, betas ...)."""
        raise NotImplementedError

    def _call(self, bucket: Bucket, name: str, arguments: dict) -> None:
        """Run op ``name`` on ``bucket`` with the entries of ``arguments`` its schema names,
        through the backend that runs the bucket's device and dtypes."""
        op = ops.get(self._backend_for(bucket.device, bucket.dtype), name)
        op(**{key: arguments[key] for key in ops.ARG_NAMES[name]})

    def _backend_for(self, device, dtype) -> str:
        """Resolved once per (device, param dtype), and again if ``SWD_KERNELS_BACKEND``
        changes; under ``"auto"`` dtypes the fast backends lack (float64 params on CPU, bf16
        state beside fp32 params on CUDA) fall to the next backend."""
        key = (device, dtype, os.environ.get(backends.ENV_VAR))
        backend = self._resolved.get(key)
        if backend is None:
            backend = self._resolved[key] = backends.resolve(
                self.backend, device, dtype, self.state_dtype or dtype)
        return backend

    @torch.no_grad()
    def step(self, closure=None, grad_scale=None, found_inf=None):
        """One optimizer step. ``grad_scale``/``found_inf`` (device tensors) come from a
        GradScaler, which sets them as attributes; a nonzero ``found_inf`` skips the step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = self._amp_args(grad_scale, found_inf)
        if torch.compiler.is_compiling():
            self._init_group()
        else:
            # Hyperparameters are checked where they are set (constructor, add_param_group)
            # and here again, since a scheduler, a loaded state dict or the user may change a
            # group's values between steps; a compiled step skips this, so that it holds no
            # guard on a value (e.g. reading a CPU tensor lr) that changes every step.
            clipping.check_max_grad_norm(self.max_grad_norm)
            for group in self.param_groups:
                self._validate_group(group)
        buckets = self._buckets()
        if buckets or self._partitioned:  # a rank without grads still joins the collectives
            self._run(buckets, grad_scale, found_inf)
            for bucket in buckets:
                self._finish(bucket)
        return loss

    # Families: AdamS and AdaiS reduce (pass 1) before their update; SGDS does not.
    _reduces = True
    _update_op = "adam_update"

    def _run(self, buckets: list[Bucket], grad_scale, found_inf) -> None:
        """Pass 1 (the step's global statistics, clipping), then every bucket's update. Which
        collectives run depends only on the optimizer's settings, never on which params have
        grads, so ranks of a partition that hold no grad this step still join them."""
        arguments = [self._arguments(b, grad_scale, found_inf) for b in buckets]
        devices = list(dict.fromkeys(b.device for b in buckets)) or [self._home_device()]
        found_inf = self._on(found_inf, devices[0])
        clip = self.max_grad_norm is not None
        fuse_clip = clip and self._reduces and all(map(self._keeps_v_sum, self.param_groups))
        grad_sq_sums = self._clip_first(buckets, arguments, devices) if clip and not fuse_clip \
            else None
        if self._reduces:
            self._global_mean(buckets, arguments, devices, found_inf, fuse_clip)
            if grad_sq_sums is not None:  # report the norm before clipping
                for device in devices:
                    self._accum(device)[ops.GRAD_SQ_SUM].copy_(grad_sq_sums[device])
        for bucket, args in zip(buckets, arguments):
            self._call(bucket, self._update_op, args)
        self._record_stats(devices[0], found_inf)

    # ----- statistics -------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """What the last step measured, as device tensors (0-dim, float64) that are updated
        in place by every step and read without a host sync whenever you choose to:

        - ``"grad_norm"``: the global L2 norm of the (unscaled) grads before clipping (AdamS,
          AMSGradS, AdaiS; SGDS when ``max_grad_norm`` is set);
        - ``"vhat_mean"``: v_bar, the global mean of v_hat (not for SGDS);
        - ``"decay"``: a list, one per param group, of the decay the step applied: the
          weights were multiplied by ``1 - decay``.

        A step a GradScaler skips leaves them as they were. Empty before the first step."""
        return self._stats.as_dict()

    def _stat_keys(self) -> tuple[str, ...]:
        keys = ("grad_norm",) if self._reduces or self.max_grad_norm is not None else ()
        return keys + (("vhat_mean",) if self._reduces else ())

    def _decay_applied(self, group: dict, accum: torch.Tensor):
        """The fraction of the weights one step of ``group`` removed, given the step's
        ``accum`` (a 0-dim tensor, or a float)."""
        raise NotImplementedError

    def _record_stats(self, device, found_inf) -> None:
        accum = self._accum(device)
        # a float decay (a float lr times float hyperparameters) is filled in by a kernel:
        # torch.as_tensor would copy it from pageable host memory, a sync that CUDA-graph
        # capture refuses
        decays = [value if torch.is_tensor(value) else
                  torch.full((), value, dtype=torch.float64, device=device)
                  for value in (self._decay_applied(group, accum)
                                for group in self.param_groups)]
        self._stats.record(accum, decays, self._stat_keys(), found_inf)

    def _home_device(self) -> torch.device:
        """Where a step's statistics live when no bucket says: the first param's device."""
        for group in self.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    # ----- checkpoints ------------------------------------------------------------------
    def __getstate__(self) -> dict:
        """torch pickles defaults, state and param groups; the options go along."""
        return {**super().__getstate__(), "backend": self.backend,
                "state_dtype": self.state_dtype, "max_grad_norm": self.max_grad_norm,
                "_step_supports_amp_scaling": self._step_supports_amp_scaling}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("backend", "auto")
        self.__dict__.setdefault("state_dtype", None)
        for group in self.param_groups:  # state_dicts from torch or older versions
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        self.__dict__.setdefault("max_grad_norm", None)
        self.__dict__.setdefault("_accums", {})
        self.__dict__.setdefault("_stats", StepStats())
        self.__dict__.setdefault("_partitioned", False)
        self.__dict__.setdefault("_process_group", None)
        self.__dict__.setdefault("_resolved", {})
        self._plan = None

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, then our layout: steps as float32 on the param's device and states
        in ``state_dtype`` taken from the saved tensors (torch casts them to the param's
        dtype, which would round fp32 state of a bf16 param)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if saved is None:
                continue
            state = self.state[p]
            for key, value in saved.items():
                if not torch.is_tensor(value):
                    if key == STEP_KEY:
                        state[key] = torch.tensor(float(value), dtype=torch.float32,
                                                  device=p.device)
                    continue
                if key == STEP_KEY:
                    state[key] = value.to(device=p.device, dtype=torch.float32,
                                          copy=True).reshape(())
                elif key == V_SUM_KEY:
                    if distributed.is_sharded(p):  # a rank's own sum: recompute it
                        state.pop(key, None)
                    else:
                        state[key] = value.to(device=p.device, dtype=torch.float64,
                                              copy=True).reshape(())
                elif value.is_floating_point():
                    state[key] = value.to(device=p.device, dtype=self._state_dtype_for(p),
                                          copy=True)
        self._after_load()

    def _after_load(self) -> None:
        """Drop what was derived from the old state; the next step recomputes it."""
        self._plan = None
