"""AdamS the way the authors' published optimizer runs it: a Python loop over tensors, about
ten small torch ops per tensor, and a host sync per step to read the global mean ``v_bar``
(docs/design.md §1). Written here from the equations, as the baseline the fused kernels replace.

    m = b1·m + (1−b1)·g ;  v = b2·v + (1−b2)·g² ;  v̂ = v/(1−b2^t)
    v̄ = Σv̂ / N over every element of every tensor            <- .item(): host sync
    θ = θ·(1 − lr·wd/√v̄) − lr/(1−b1^t) · m/(√v̂ + eps)

``ReferenceAdamS`` is the eager loop; ``CompiledReferenceAdamS`` is the same loop with the
two per-tensor bodies run through ``torch.compile(dynamic=True)`` (one graph per pass and
dtype, reused for every tensor size; the Python loop and the host sync stay). Compiling the
whole step instead would unroll 148..1,000 tensors into one graph per workload.
"""
from __future__ import annotations

import math

import torch


class ReferenceAdamS:
    """The per-tensor AdamS loop. Params must have ``.grad`` set; ``state_dtype`` keeps the
    moments in another dtype than the params (math in fp32 then)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 state_dtype=None):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state_dtype = state_dtype
        self.state: dict[torch.Tensor, dict] = {}

    def _state(self, p: torch.Tensor) -> dict:
        if p not in self.state:
            dtype = self.state_dtype or p.dtype
            self.state[p] = {"step": 0,
                             "exp_avg": torch.zeros_like(p, dtype=dtype),
                             "exp_avg_sq": torch.zeros_like(p, dtype=dtype)}
        return self.state[p]

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        v_hat_sum, count = None, 0
        for p in self.params:
            s = self._state(p)
            s["step"] += 1
            part = self._moments(p.grad, s["exp_avg"], s["exp_avg_sq"], s["step"])
            v_hat_sum = part if v_hat_sum is None else v_hat_sum + part
            count += p.numel()
        v_bar = (v_hat_sum / count).item()  # the host sync of every step
        decay = 1 - self.lr * self.weight_decay / math.sqrt(v_bar) if v_bar > 0 else 1.0
        for p in self.params:
            s = self.state[p]
            self._update(p, s["exp_avg"], s["exp_avg_sq"], s["step"], decay)

    def _moments(self, g, m, v, t) -> torch.Tensor:
        """Update m and v in place; return Σv̂ of this tensor (a 0-dim tensor)."""
        beta1, beta2 = self.betas
        if g.dtype != m.dtype:
            g = g.to(m.dtype)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return v.sum(dtype=torch.float32) / (1 - beta2 ** t)

    def _update(self, p, m, v, t, decay: float) -> None:
        beta1, beta2 = self.betas
        denom = (v / (1 - beta2 ** t)).sqrt_().add_(self.eps)
        work = p if p.dtype == m.dtype else p.to(m.dtype)
        work.mul_(decay).addcdiv_(m, denom, value=-self.lr / (1 - beta1 ** t))
        if work is not p:
            p.copy_(work)

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.state.values()
                   for t in s.values() if torch.is_tensor(t))


def _moments_body(g, m, v, step, beta1: float, beta2: float):
    """Pass 1 for one flat tensor, compiled: advance ``step`` (0-dim), update m and v in
    fp32 math, return Σv̂. Changing scalars travel as tensors so no step recompiles."""
    step.add_(1)
    gf = g.float()
    m_new = m.float() * beta1 + gf * (1 - beta1)
    v_new = v.float() * beta2 + gf * gf * (1 - beta2)
    m.copy_(m_new)
    v.copy_(v_new)
    return v_new.sum() / (1 - beta2 ** step)


def _update_body(p, m, v, step, decay, lr: float, beta1: float, beta2: float, eps: float):
    denom = (v.float() / (1 - beta2 ** step)).sqrt() + eps
    p_new = p.float() * decay - (lr / (1 - beta1 ** step)) * m.float() / denom
    p.copy_(p_new)


class CompiledReferenceAdamS(ReferenceAdamS):
    """The same loop with its per-tensor bodies compiled by ``torch.compile``."""

    _compiled: dict[str, object] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not CompiledReferenceAdamS._compiled:
            CompiledReferenceAdamS._compiled = {
                "moments": torch.compile(_moments_body, dynamic=True),
                "update": torch.compile(_update_body, dynamic=True)}
        self._decay: dict[torch.device, torch.Tensor] = {}

    def _state(self, p: torch.Tensor) -> dict:
        if p not in self.state:
            dtype = self.state_dtype or p.dtype
            self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                             "exp_avg": torch.zeros_like(p, dtype=dtype),
                             "exp_avg_sq": torch.zeros_like(p, dtype=dtype)}
        return self.state[p]

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        moments, update = self._compiled["moments"], self._compiled["update"]
        v_hat_sum, count = None, 0
        for p in self.params:
            s = self._state(p)
            part = moments(p.grad.view(-1), s["exp_avg"].view(-1), s["exp_avg_sq"].view(-1),
                           s["step"], beta1, beta2)
            v_hat_sum = part if v_hat_sum is None else v_hat_sum + part
            count += p.numel()
        v_bar = (v_hat_sum / count).item()  # the host sync, as in the eager loop
        decay = 1 - self.lr * self.weight_decay / math.sqrt(v_bar) if v_bar > 0 else 1.0
        for device in {p.device for p in self.params}:
            if device not in self._decay:
                self._decay[device] = torch.empty((), device=device)
            self._decay[device].fill_(decay)  # a device write, no recompile per value
        for p in self.params:
            s = self.state[p]
            update(p.view(-1), s["exp_avg"].view(-1), s["exp_avg_sq"].view(-1), s["step"],
                   self._decay[p.device], self.lr, beta1, beta2, self.eps)
