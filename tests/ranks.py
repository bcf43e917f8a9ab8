"""What the multi-process tests (gloo ranks spawned on CPU) share: the plain training loop one
process and every rank run on given grads, and the quiet exit of a rank that is done."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def train(full_params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]],
          make_optimizer) -> list[torch.Tensor]:
    """Params made from ``full_params``, stepped once per entry of ``grads_per_step`` by the
    optimizer ``make_optimizer(params)`` builds; returns the final params."""
    params = [torch.nn.Parameter(p.clone()) for p in full_params]
    optimizer = make_optimizer(params)
    for step_grads in grads_per_step:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        optimizer.step()
    return [p.detach() for p in params]


def exit_quietly() -> None:
    """End a rank that finished its work and wrote its result, skipping interpreter shutdown:
    there a rank sometimes aborted ("terminate called without an active exception", about 1
    run in 8 on 2 cores, with or without a barrier before destroy_process_group), after
    everything the test checks was done. Errors before this point still exit nonzero."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_rank(rank: int, world: int, init_file: str, out_file: str, work) -> None:
    """One spawned gloo rank: join the group, run ``work()``, save what it returns from rank
    0 to ``out_file``, leave the group once every rank is done, exit quietly."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        result = work()
        if rank == 0:
            torch.save(result, out_file)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()
    exit_quietly()
