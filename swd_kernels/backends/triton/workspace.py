"""The kernels' scratch memory: chunk partials, per-tensor sums and arrival counters.

The programs of one launch meet here (the last to arrive reads what the others wrote), so two
launches that may run at the same time must never share a workspace, and a launch must find
its counters at zero.

Outside CUDA-graph capture each (device, stream) has one workspace, grown as buckets need it.
Launches on one stream run one after another, and every launch leaves the counters it used
at zero (its last program to arrive resets them), so the next launch on that stream starts
clean; launches on two streams (two optimizers with buckets of the same sizes, say) never
touch each other's partials or counters. A workspace replaced by a larger one goes back to
torch's caching allocator, which hands its memory only to later work on the same stream.

While a stream is capturing a CUDA graph, every launch gets a fresh workspace instead. Its
memory comes from the graph's private pool, which the graph keeps for as long as it lives,
and the fill that zeroes its counters is captured too, so every replay starts from zero,
whatever ran in between (eager steps, other graphs).
"""
from __future__ import annotations

import torch

from . import streams

# Counter slots (int32) of a workspace, then one counter per tensor from TENSOR_COUNTERS on.
REDUCE_COUNTER, UPDATE_COUNTER, BARRIER_ARRIVE, BARRIER_RELEASE, STEP_DONE = range(5)
TENSOR_COUNTERS = 8

# Workspaces allocated (tests check when that happens).
stats = {"allocated": 0}


class Workspace:
    """Room for a bucket of up to ``tensors`` tensors in ``chunks`` chunks: ``partials``
    (float64, two per chunk: the squared grads', and AMSGradS's maxima), ``tensor_sums``
    (float64, three per tensor: its v_hat sum, squared grads and clip term) and
    ``counters`` (int32, zero between launches)."""

    def __init__(self, device: torch.device, tensors: int, chunks: int):
        self.tensors, self.chunks = tensors, chunks
        self.partials = torch.empty(2 * chunks, dtype=torch.float64, device=device)
        self.tensor_sums = torch.empty(3 * tensors, dtype=torch.float64, device=device)
        self.counters = torch.zeros(TENSOR_COUNTERS + tensors, dtype=torch.int32,
                                    device=device)
        self.tensor_counters = self.counters[TENSOR_COUNTERS:]
        self._slots = [self.counters[slot:] for slot in range(TENSOR_COUNTERS)]
        stats["allocated"] += 1

    def counter(self, slot: int) -> torch.Tensor:
        """Counter ``slot`` (``REDUCE_COUNTER`` ...) as a pointer for a kernel."""
        return self._slots[slot]


_workspaces: dict[tuple, Workspace] = {}


def workspace(device: torch.device, tensors: int, chunks: int) -> Workspace:
    """A workspace for a launch over ``tensors`` tensors in ``chunks`` chunks, issued now on
    ``device``'s current stream."""
    if streams.capturing(device):
        return Workspace(device, tensors, chunks)
    key = (device, streams.stream_key(device))
    found = _workspaces.get(key)
    if found is None or found.tensors < tensors or found.chunks < chunks:
        found = _workspaces[key] = Workspace(
            device, max(tensors, found.tensors if found else 0),
            max(chunks, found.chunks if found else 0))
    return found

