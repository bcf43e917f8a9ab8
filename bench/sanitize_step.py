"""One step of each SWD optimizer on small CUDA tensors through backend='native', for
compute-sanitizer (memcheck, racecheck) in bench/device_check.sh:

    compute-sanitizer --tool memcheck python bench/sanitize_step.py

Sizes straddle block boundaries (1, 4097, 2^16+3, a channels_last 4-D weight), two param
groups, fp32 and bf16 params with fp32 state. Prints what ran and what was unavailable;
exits 0 when every available step ran and produced finite params."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import swd_kernels  # noqa: E402
from swd_kernels.backends import unavailable_reason  # noqa: E402


def make_groups(dtype, device):
    gen = torch.Generator(device=device).manual_seed(0)
    shapes = [(1,), (4097,), ((1 << 16) + 3,)]
    params = [torch.randn(s, generator=gen, device=device).to(dtype) for s in shapes]
    conv = torch.randn(8, 5, 3, 3, generator=gen, device=device).to(dtype)
    params.append(conv.to(memory_format=torch.channels_last))
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device).to(dtype)
        if p.dim() == 4:
            p.grad = p.grad.to(memory_format=torch.channels_last)
    return [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]


def main() -> int:
    if not torch.cuda.is_available():
        print("sanitize_step: no CUDA GPU visible; nothing to check")
        return 0
    device = torch.device("cuda")
    reason = unavailable_reason("native", device)
    if reason is not None:
        print(f"sanitize_step: native backend unavailable on cuda: {reason}")
        return 0
    optimizers = {
        "AdamS": lambda g, sd: swd_kernels.AdamS(g, backend="native", state_dtype=sd),
        "AMSGradS": lambda g, sd: swd_kernels.AMSGradS(g, backend="native", state_dtype=sd),
        "SGDS": lambda g, sd: swd_kernels.SGDS(g, lr=0.1, momentum=0.9, backend="native",
                                               state_dtype=sd),
        "AdaiS": lambda g, sd: swd_kernels.AdaiS(g, lr=0.1, backend="native", state_dtype=sd),
    }
    failures = 0
    for name, build in optimizers.items():
        for dtype, state_dtype in ((torch.float32, None), (torch.bfloat16, torch.float32)):
            groups = make_groups(dtype, device)
            opt = build(groups, state_dtype)
            opt.step()
            opt.step()  # the second step takes the non-first-step paths (SGDS momentum)
            torch.cuda.synchronize()
            finite = all(torch.isfinite(p).all().item() for g in groups for p in g["params"])
            failures += not finite
            print(f"sanitize_step: {name:8} {str(dtype):15} 2 steps "
                  f"{'ok' if finite else 'NON-FINITE PARAMS'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
