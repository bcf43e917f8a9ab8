"""An independent float64 oracle of docs/design.md §1, written from the equations.

One plain loop per tensor, float64 everywhere, no foreach ops, no code shared with any
backend: the thing every backend is held to. It keeps its own float64 copies of the params
and of every state tensor, under torch's state keys.

Storage rounding. A backend stores bf16/fp16 params (and state, unless ``state_dtype`` says
otherwise) rounded to that dtype after every step, and the next step starts from the rounded
values. The oracle can do the same (``param_dtype`` / ``state_dtype``): the math stays
float64, only the *stored* values are rounded, after the step used them. The backend and the
oracle then differ only where fp32-vs-float64 arithmetic lands on opposite sides of a
rounding boundary, which is what makes a tight half-precision tolerance possible.

Rounding ties (``track_rounding=True``). Where the float64 value lies within a backend's fp32
noise of a storage rounding boundary (a midpoint between two bf16/fp16 neighbours), either
rounding is right. The oracle then records, for every value it stored in the last step, its
distance to the nearest boundary relative to the magnitudes it was computed from, and
``follow`` checks, wherever that distance is within a band (tests/tolerance.py's
``TIE_BAND``), that a backend's stored value is a rounding of some value within the band, and
continues from it.

The mean ``v_bar`` is global by default; ``mean_scope="tensor"`` or ``"group"`` gives the
wrong variants a test uses to show that the optimizer's result depends on the scope.
"""
from __future__ import annotations

import torch

F64 = torch.float64

# Defaults of docs/design.md §1 (the authors' optimizers); SGDS and AdaiS have no default lr.
DEFAULTS = {
    "adams": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, amsgrad=False,
                  decay_power=0.5, decay_eps=0.0, maximize=False),
    "sgds": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False),
    "adais": dict(betas=(0.1, 0.99), eps=1e-3, weight_decay=0.0, maximize=False),
}


def state_keys(kind: str, group: dict) -> tuple[str, ...]:
    """The state keys ``kind`` keeps per tensor besides ``step`` (torch's names)."""
    if kind == "adams":
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
    if kind == "sgds":
        return ("momentum_buffer",) if group["momentum"] != 0 else ()
    if kind == "adais":
        return ("exp_avg", "exp_avg_sq", "beta1_prod")
    raise ValueError(f"unknown optimizer kind {kind!r}")


def round_to(x: torch.Tensor, dtype) -> torch.Tensor:
    """``x`` (float64) rounded to ``dtype`` storage and widened back; ``None`` keeps it."""
    return x if dtype is None else x.to(dtype).to(F64)


def _largest(t: torch.Tensor) -> float:
    return t.abs().max().item() if t.numel() else 0.0


def _per_param(dtype, count: int) -> list:
    return list(dtype) if isinstance(dtype, (list, tuple)) else [dtype] * count


class Oracle:
    """Float64 reference for ``kind`` in ``{"adams", "sgds", "adais"}``.

    ``groups``: list of dicts with ``params`` (tensors, copied) and any hyperparameters;
    missing ones come from ``DEFAULTS``. ``param_dtype``/``state_dtype``: storage dtypes whose
    rounding to emulate (``None``: keep float64), one for all params or a list in param order.
    """

    def __init__(self, kind: str, groups: list[dict], param_dtype=None, state_dtype=None,
                 mean_scope: str = "global", track_rounding: bool = False):
        if mean_scope not in ("global", "group", "tensor"):
            raise ValueError(mean_scope)
        self.kind = kind
        self.mean_scope = mean_scope
        self.groups = []
        for group in groups:
            hp = {**DEFAULTS[kind], **{k: v for k, v in group.items() if k != "params"}}
            if "lr" not in hp:
                raise ValueError(f"{kind} needs lr")
            params = [p.detach().to(F64).clone() for p in group["params"]]
            self.groups.append({**hp, "params": params})
        count = len(self.params)
        # storage dtype to emulate per param (a single value applies to every param)
        self.param_dtypes = _per_param(param_dtype, count)
        self.state_dtypes = _per_param(state_dtype, count)
        # one dict per param, in flat order: "step" (int) and float64 tensors
        self.state = [dict() for _ in range(count)]
        # per param, the largest magnitude each quantity ("params", state keys) has had: fp32
        # errors scale with the values a step computed from, even when its result is ~0
        self.peaks = [{"params": _largest(p)} for p in self.params]
        self.track_rounding = track_rounding
        # per param and key ("params" or a state key): the float64 value stored in the last
        # step and the magnitude of the operands it was computed from
        self.last_rounding = [dict() for _ in range(count)]

    # ----- views ------------------------------------------------------------------------
    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.groups for p in g["params"]]

    def _indexed(self):
        """(flat index, group index, group, param) for every param."""
        i = 0
        for gi, group in enumerate(self.groups):
            for p in group["params"]:
                yield i, gi, group, p
                i += 1

    def set_state(self, index: int, step: int, **tensors: torch.Tensor) -> None:
        """Start param ``index`` mid-training: its step count and state tensors (torch's keys,
        e.g. ``exp_avg=...``), copied to float64 as stored."""
        self.state[index] = {"step": step, **{key: t.detach().to(F64).clone()
                                              for key, t in tensors.items()}}
        for key, t in tensors.items():
            self.peaks[index][key] = _largest(t)

    # ----- the step ---------------------------------------------------------------------
    def step(self, grads: list, grad_scale: float | None = None, found_inf: bool = False,
             v_bar_share: tuple[float, int] = (0.0, 0)):
        """One step; ``grads`` is a flat list (param order) of tensors or ``None``.
        ``v_bar_share``: the sum of v_hat and the element count of tensors outside this oracle
        that join its global mean (an earlier bucket's share of the same step)."""
        self.last_rounding = [dict() for _ in self.params]
        if found_inf:
            return
        grads = [None if g is None else g.detach().to(F64) for g in grads]
        if grad_scale is not None:
            grads = [None if g is None else g / grad_scale for g in grads]
        active = []  # (i, gi, group, p, g) of params with a grad
        for i, gi, group, p in self._indexed():
            g = grads[i]
            if g is None:
                continue
            if group["maximize"]:
                g = -g
            active.append((i, gi, group, p, g))
        if self.kind == "sgds":
            for item in active:
                self._sgd(*item)
            return
        # Pass 1: every tensor's new second moment and v_hat, before any param moves.
        new = {}
        for i, gi, group, p, g in active:
            new[i] = self._second_moment(i, group, p, g)
        v_bars = self._means(active, new, v_bar_share)
        # per tensor index, the sum of its new v_hat (its share of the mean)
        self.last_v_hat_sums = {i: new[i]["v_hat"].sum().item() for i in new}
        self.last_v_bars = v_bars  # per tensor index (one value under the global scope)
        for i, gi, group, p, g in active:
            v_bar = v_bars[i]
            if self.kind == "adams":
                self._adam(i, group, p, g, new[i], v_bar)
            else:
                self._adai(i, group, p, g, new[i], v_bar)

    def _state(self, i: int, group: dict, p: torch.Tensor) -> dict:
        state = self.state[i]
        if not state:
            state["step"] = 0
            for key in state_keys(self.kind, group):
                state[key] = torch.full_like(p, 1.0 if key == "beta1_prod" else 0.0)
                self.peaks[i][key] = _largest(state[key])
        return state

    def _second_moment(self, i, group, p, g) -> dict:
        state = self._state(i, group, p)
        t = state["step"] + 1
        b2 = group["betas"][1]
        v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
        out = {"t": t, "v": v}
        if self.kind == "adams" and group["amsgrad"]:
            out["vmax"] = torch.maximum(state["max_exp_avg_sq"], v)
            out["v_hat"] = out["vmax"] / (1 - b2 ** t)
        else:
            out["v_hat"] = v / (1 - b2 ** t)
        return out

    def _means(self, active, new, share=(0.0, 0)) -> dict:
        """v_bar for every active tensor: one number over all of them and ``share`` (the
        contract), or the per-group / per-tensor means of the wrong variants."""
        def scope(i, gi):
            return {"global": 0, "group": gi, "tensor": i}[self.mean_scope]
        sums, counts = ({0: share[0]}, {0: share[1]}) if self.mean_scope == "global" else ({}, {})
        for i, gi, group, p, g in active:
            key = scope(i, gi)
            sums[key] = sums.get(key, 0.0) + new[i]["v_hat"].sum().item()
            counts[key] = counts.get(key, 0) + p.numel()
        means = {}
        for i, gi, group, p, g in active:
            key = scope(i, gi)
            means[i] = sums[key] / counts[key] if counts[key] > 0 else 0.0
        return means

    def _track(self, i: int, key: str, value: torch.Tensor, dtype, operands) -> None:
        """Keep ``value`` (float64, about to be rounded to ``dtype``) and ``operands`` (the
        elementwise magnitudes it was computed from) for ``follow``."""
        if self.track_rounding and dtype is not None:
            self.last_rounding[i][key] = (value.clone(),
                                          operands if operands is not None else value.abs())

    def follow(self, index: int, key: str, actual: torch.Tensor, band: float) -> int:
        """Where the value of ``key`` ("params" or a state key) of param ``index`` stored in the
        last step lay within ``band`` x its operands of a rounding boundary of ``actual``'s
        dtype, assert that ``actual`` (a backend's stored tensor) holds a rounding of some
        value within that band, and continue from it. Returns how many elements that was."""
        if key not in self.last_rounding[index]:
            return 0
        value, operands = self.last_rounding[index][key]
        low = (value - band * operands).to(actual.dtype)
        high = (value + band * operands).to(actual.dtype)
        tie = low != high  # a rounding boundary lies within the band
        if not tie.any():
            return 0
        actual = actual.detach().to(F64)
        wrong = tie & ((actual < low.to(F64)) | (actual > high.to(F64)))
        assert not wrong.any(), (
            f"{key} of param #{index}: {int(wrong.sum())} elements at a rounding tie hold no "
            f"rounding of a value within fp32 noise of the oracle's, e.g. {actual[wrong][:3]} "
            f"for {value[wrong][:3]}")
        target = self.params[index] if key == "params" else self.state[index][key]
        target.copy_(torch.where(tie, actual, target))
        return int(tie.sum())

    def _store_state(self, i: int, key: str, value: torch.Tensor, operands=None) -> None:
        self._track(i, key, value, self.state_dtypes[i], operands)
        self.state[i][key] = round_to(value, self.state_dtypes[i])
        self.peaks[i][key] = max(self.peaks[i].get(key, 0.0), _largest(self.state[i][key]))

    def _store_param(self, i: int, value: torch.Tensor, operands=None) -> None:
        self._track(i, "params", value, self.param_dtypes[i], operands)
        self.params[i].copy_(round_to(value, self.param_dtypes[i]))
        self.peaks[i]["params"] = max(self.peaks[i]["params"], _largest(self.params[i]))

    def _adam(self, i, group, p, g, moments, v_bar):
        state = self.state[i]
        t = moments["t"]
        b1, b2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        power, decay_eps = group["decay_power"], group["decay_eps"]
        m = b1 * state["exp_avg"] + (1 - b1) * g
        if power == 0:  # exactly AdamW
            decay = lr * wd
        else:
            base = v_bar + decay_eps
            decay = lr * wd / base ** power if base > 0 else 0.0  # v_bar = 0: no decay
        denominator = moments["v_hat"].sqrt() + eps
        theta = p * (1 - decay) - lr / (1 - b1 ** t) * m / denominator
        # operand magnitudes: a sum's terms (m may cancel to ~0 from larger terms)
        m_operands = b1 * state["exp_avg"].abs() + (1 - b1) * g.abs()
        update_operands = lr / (1 - b1 ** t) * m_operands / denominator
        self._store_param(i, theta, p.abs() + theta.abs() + update_operands)
        self._store_state(i, "exp_avg", m, m_operands)
        v_operands = state["exp_avg_sq"] + (1 - b2) * g * g
        self._store_state(i, "exp_avg_sq", moments["v"], v_operands)
        if group["amsgrad"]:
            self._store_state(i, "max_exp_avg_sq", moments["vmax"], v_operands)
        state["step"] = t

    def _adai(self, i, group, p, g, moments, v_bar):
        state = self.state[i]
        b0 = group["betas"][0]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        theta = p * (1 - lr * wd)
        if v_bar > 0:
            ratio = moments["v_hat"] / v_bar
        else:
            ratio = torch.ones_like(p)
        b1 = (1 - b0 * ratio).clamp(0.0, 1 - eps)
        prod = state["beta1_prod"] * b1
        m = b1 * state["exp_avg"] + (1 - b1) * g
        update = lr * m / (1 - prod)
        new_theta = theta - update
        # operand magnitudes: b1 is 2^-24 off absolutely and (1 - b1) relatively, so m's noise
        # is that of |m_prev| + |(1 - b1) g|; fp32 holds 1 - prod to 2^-24 absolute, so the
        # update's grows as 1 / (1 - prod)
        m_operands = state["exp_avg"].abs() + (1 - b1) * g.abs()
        update_operands = lr * m_operands / (1 - prod) + update.abs() / (1 - prod)
        self._store_param(i, new_theta, p.abs() + new_theta.abs() + update_operands)
        b2 = group["betas"][1]
        self._store_state(i, "exp_avg", m, m_operands)
        self._store_state(i, "exp_avg_sq", moments["v"], state["exp_avg_sq"] + (1 - b2) * g * g)
        self._store_state(i, "beta1_prod", prod, state["beta1_prod"].abs())
        state["step"] = moments["t"]

    def _sgd(self, i, gi, group, p, g):
        state = self._state(i, group, p)
        lr, mu, d, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        theta = p * (1 - (1 - d) / (1 - mu) * lr * wd)
        if mu != 0:
            if state["step"] == 0:
                buf = g.clone()
            else:
                buf = mu * state["momentum_buffer"] + (1 - d) * g
            direction = g + mu * buf if group["nesterov"] else buf
            buf_operands = g.abs() if state["step"] == 0 else (
                mu * state["momentum_buffer"].abs() + (1 - d) * g.abs())
            self._store_state(i, "momentum_buffer", buf, buf_operands)
            direction_operands = (g.abs() + mu * buf_operands if group["nesterov"]
                                  else buf_operands)
        else:
            direction, direction_operands = g, g.abs()
        decayed = theta
        theta = theta - lr * direction
        self._store_param(i, theta, p.abs() + decayed.abs() + lr * direction_operands)
        state["step"] += 1
