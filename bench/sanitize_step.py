"""Short training runs of every SWD optimizer on small CUDA tensors, for compute-sanitizer
(bench/device_check.sh runs memcheck, racecheck and synccheck on it):

    compute-sanitizer --tool memcheck python bench/sanitize_step.py --backend native
    compute-sanitizer --tool racecheck python bench/sanitize_step.py --dtypes fp32

For each backend asked for, optimizer (AdamS, AMSGradS, SGDS with momentum, AdaiS, and AdamS
with max_grad_norm where this build has it) and dtype (fp32; bf16 params with fp32 state), four
buckets:
  one_group      one param group: AdamS/AMSGradS call adam_step (native: one cooperative launch)
  two_groups     two groups: adam_reduce on each bucket, then an update on each
  odd_offsets    one group whose params and grads start one element into their buffers (the
                 element-wise loads and stores), with an empty param among them
  many_tensors   one group of 230 small tensors: more than one native launch table (224)
Sizes straddle block and chunk boundaries (1, 4097, 2^16 + 3, a channels_last 4-D weight).
Three steps each: the first creates the state, the second runs with a GradScaler's scale (and
takes SGDS's momentum branch), the third with found_inf set (the step is skipped).

Exit status: 1 if a step raised or left a param non-finite, 2 if a backend asked for is
unavailable on cuda (a broken build must not pass as "nothing to check"), 0 otherwise; also 0,
with a note, where no GPU is visible."""
from __future__ import annotations

import argparse
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import swd_kernels  # noqa: E402
from swd_kernels.backends import unavailable_reason  # noqa: E402

SHAPES = [(1,), (4097,), ((1 << 16) + 3,), (8, 5, 3, 3)]
MANY = 230  # tensors: more than one native TensorTable (kTableCapacity = 224)
LAYOUTS = ("one_group", "two_groups", "odd_offsets", "many_tensors")
DTYPES = {"fp32": (torch.float32, None), "bf16-fp32state": (torch.bfloat16, torch.float32)}

OPTIMIZERS = {
    "AdamS": lambda groups, **kw: swd_kernels.AdamS(groups, lr=1e-2, weight_decay=0.1, **kw),
    "AMSGradS": lambda groups, **kw: swd_kernels.AMSGradS(groups, lr=1e-2, weight_decay=0.1,
                                                          **kw),
    "SGDS": lambda groups, **kw: swd_kernels.SGDS(groups, lr=0.1, momentum=0.9,
                                                  weight_decay=0.1, **kw),
    "AdaiS": lambda groups, **kw: swd_kernels.AdaiS(groups, lr=0.1, weight_decay=0.1, **kw),
    "AdamS+clip": lambda groups, **kw: swd_kernels.AdamS(groups, lr=1e-2, weight_decay=0.1,
                                                         max_grad_norm=1.0, **kw),
}


def at_odd_offset(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` (same strides) starting one element into its buffer: no pack load fits."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    return buffer[1:].as_strided(t.shape, t.stride()).copy_(t)


def random_like_layout(shape, dtype, generator, device) -> torch.Tensor:
    """Random values made on the CPU and copied over (a copy is no kernel launch, which keeps
    the sanitized run short); 4-D tensors channels_last."""
    t = torch.randn(shape, generator=generator).to(dtype)
    if len(shape) == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.to(device)


def make_groups(layout: str, dtype, generator, device) -> list[dict]:
    if layout == "many_tensors":
        shapes = [(1 + (i * 37) % 300,) for i in range(MANY)]
    elif layout == "odd_offsets":
        shapes = SHAPES + [(0,)]
    else:
        shapes = SHAPES
    params = [random_like_layout(s, dtype, generator, device) for s in shapes]
    if layout == "odd_offsets":
        params = [at_odd_offset(p) for p in params]
    params = [p.requires_grad_() for p in params]
    if layout == "two_groups":
        return [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]
    return [{"params": params}]


def set_grads(groups: list[dict], layout: str, generator) -> None:
    for group in groups:
        for p in group["params"]:
            g = random_like_layout(p.shape, p.dtype, generator, p.device)  # p's strides
            p.grad = at_odd_offset(g) if layout == "odd_offsets" else g


def run_one(name: str, backend: str, dtype, state_dtype, layout: str, device) -> str:
    """Three steps; returns "ok", or raises."""
    generator = torch.Generator().manual_seed(0)
    groups = make_groups(layout, dtype, generator, device)
    optimizer = OPTIMIZERS[name](groups, backend=backend, state_dtype=state_dtype)
    scale = torch.full((1,), 4.0, device=device)
    for found_inf in (None, 0.0, 1.0):
        set_grads(groups, layout, generator)
        if found_inf is None:
            optimizer.step()
        else:  # the scaler's grads are scale x the true ones
            torch._foreach_mul_([p.grad for group in groups for p in group["params"]], 4.0)
            optimizer.step(grad_scale=scale,
                           found_inf=torch.full((1,), found_inf, device=device))
    torch.cuda.synchronize(device)
    if not all(torch.isfinite(p).all().item() for g in groups for p in g["params"]):
        raise AssertionError("non-finite params after the steps")
    return "ok"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["native", "triton", "all"], default="all")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help=f"comma-separated, of {list(DTYPES)}")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sanitize_step: no CUDA GPU visible; nothing to check")
        return 0
    device = torch.device("cuda")
    backends = ["native", "triton"] if args.backend == "all" else [args.backend]
    for backend in backends:
        reason = unavailable_reason(backend, device)
        if reason is not None:
            print(f"sanitize_step: the {backend} backend is unavailable on cuda: {reason}")
            return 2
    failures = 0
    for backend in backends:
        for name in OPTIMIZERS:
            for dtype_name in args.dtypes.split(","):
                dtype, state_dtype = DTYPES[dtype_name]
                for layout in LAYOUTS:
                    where = f"{backend:6} {name:10} {dtype_name:14} {layout:12}"
                    try:
                        outcome = run_one(name, backend, dtype, state_dtype, layout, device)
                    except Exception as error:  # report every failing run, fail at the end
                        if isinstance(error, TypeError) and "max_grad_norm" in str(error):
                            outcome = "skipped (no max_grad_norm in this build)"
                        else:
                            failures += 1
                            outcome = "FAILED\n" + traceback.format_exc()
                    print(f"sanitize_step: {where} {outcome}", flush=True)
    print(f"sanitize_step: {failures} failing run(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
