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
                 mean_scope: str = "global"):
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

    # ----- the step ---------------------------------------------------------------------
    def step(self, grads: list, grad_scale: float | None = None, found_inf: bool = False):
        """One step; ``grads`` is a flat list (param order) of tensors or ``None``."""
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
        v_bars = self._means(active, new)
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

    def _means(self, active, new) -> dict:
        """v_bar for every active tensor: one number over all of them (the contract), or the
        per-group / per-tensor means of the wrong variants."""
        def scope(i, gi):
            return {"global": 0, "group": gi, "tensor": i}[self.mean_scope]
        sums, counts = {}, {}
        for i, gi, group, p, g in active:
            key = scope(i, gi)
            sums[key] = sums.get(key, 0.0) + new[i]["v_hat"].sum().item()
            counts[key] = counts.get(key, 0) + p.numel()
        means = {}
        for i, gi, group, p, g in active:
            key = scope(i, gi)
            means[i] = sums[key] / counts[key] if counts[key] > 0 else 0.0
        return means

    def _store_state(self, i: int, key: str, value: torch.Tensor) -> None:
        self.state[i][key] = round_to(value, self.state_dtypes[i])
        self.peaks[i][key] = max(self.peaks[i].get(key, 0.0), _largest(self.state[i][key]))

    def _store_param(self, i: int, value: torch.Tensor) -> None:
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
        theta = p * (1 - decay) - lr / (1 - b1 ** t) * m / (moments["v_hat"].sqrt() + eps)
        self._store_param(i, theta)
        self._store_state(i, "exp_avg", m)
        self._store_state(i, "exp_avg_sq", moments["v"])
        if group["amsgrad"]:
            self._store_state(i, "max_exp_avg_sq", moments["vmax"])
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
        theta = theta - lr * m / (1 - prod)
        self._store_param(i, theta)
        self._store_state(i, "exp_avg", m)
        self._store_state(i, "exp_avg_sq", moments["v"])
        self._store_state(i, "beta1_prod", prod)
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
            self._store_state(i, "momentum_buffer", buf)
        else:
            direction = g
        theta = theta - lr * direction
        self._store_param(i, theta)
        state["step"] += 1
