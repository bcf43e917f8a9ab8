"""How many programs of a compiled kernel a GPU holds at once. The one-launch step (adam.py)
sizes its persistent grid by it: its programs wait for each other at a grid barrier, so every
one of them must be resident at the same time.

``programs_per_sm`` is the CUDA occupancy rule of one SM, from what the compiled kernel takes
(registers per thread, shared memory, warps per program) and what an SM has (``SmLimits``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

WARP_SIZE = 32
# Registers are handed to warps in units of 256, from 4 sub-partitions of the register file,
# each serving its own warps (sm_70 and later).
REGISTER_UNIT = 256
REGISTER_PARTITIONS = 4
# Shared memory the hardware reserves per resident block (sm_80 and later).
SHARED_RESERVED_PER_PROGRAM = 1024
# Resident blocks per SM by compute capability (CUDA programming guide's table); others get
# the smallest value of any supported GPU, which can only undersize the grid.
BLOCKS_PER_SM = {(8, 0): 32, (8, 6): 16, (8, 7): 16, (8, 9): 24, (9, 0): 32, (10, 0): 32}
FEWEST_BLOCKS_PER_SM = 16


@dataclass(frozen=True)
class SmLimits:
    registers: int      # 32-bit registers of one SM
    threads: int        # resident threads of one SM
    shared_memory: int  # bytes of shared memory of one SM
    blocks: int         # resident blocks (programs) of one SM
    count: int          # SMs of the GPU


def sm_limits(device: torch.device) -> SmLimits:
    props = torch.cuda.get_device_properties(device)
    return SmLimits(registers=props.regs_per_multiprocessor,
                    threads=props.max_threads_per_multi_processor,
                    shared_memory=props.shared_memory_per_multiprocessor,
                    blocks=BLOCKS_PER_SM.get((props.major, props.minor), FEWEST_BLOCKS_PER_SM),
                    count=props.multi_processor_count)


def programs_per_sm(registers: int, shared_memory: int, num_warps: int,
                    limits: SmLimits) -> int:
    """Programs of a kernel (``registers`` per thread, ``shared_memory`` bytes, ``num_warps``
    warps each) resident on one SM at once: the fewest that its registers, threads, shared
    memory and block slots allow."""
    per_warp = -(-max(registers, 1) * WARP_SIZE // REGISTER_UNIT) * REGISTER_UNIT
    warps_by_registers = (limits.registers // REGISTER_PARTITIONS // per_warp
                          * REGISTER_PARTITIONS)
    return min(warps_by_registers // num_warps,
               limits.threads // (num_warps * WARP_SIZE),
               limits.shared_memory // (shared_memory + SHARED_RESERVED_PER_PROGRAM),
               limits.blocks)


def resident_programs(compiled, device: torch.device) -> int:
    """Programs of the compiled Triton kernel ``compiled`` that ``device`` holds at once (its
    register count is known once its module is loaded)."""
    compiled._init_handles()
    limits = sm_limits(device)
    return limits.count * programs_per_sm(compiled.n_regs, compiled.metadata.shared,
                                          compiled.metadata.num_warps, limits)
