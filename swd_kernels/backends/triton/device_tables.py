"""Small constant int64 tables on the device (chunk layouts and pointer tables, chunking.py),
each filled by a copy from a host buffer that it keeps for as long as it lives.

A table must hold its bytes before any work that reads it, on whichever stream that work runs,
and without a host sync (docs/design.md §2, principle 2). ``DeviceTable.ready()`` sees to it
before every use:

- the first eager use copies the host buffer to the device on the current stream (pinned, so
  the copy is asynchronous) and records an event after it; a use on another stream makes that
  stream wait for the event once (so a layout shared by two optimizers stepping on two streams
  is never read half-copied);
- a use while the stream is capturing a CUDA graph, by a table not yet known to be filled for
  that stream (one built during this capture, e.g. for grads that backward allocated at new
  addresses inside the graph, or one filled on another stream), records the copy into the
  graph instead: every replay copies the same host bytes again before the kernels read them.
  The host buffer therefore lives as long as the table, and a table a graph reads is never
  evicted (``used_in_graph``, chunking.py). Such a copy runs only when the graph replays, so
  a later eager use still copies once itself.

A table built during capture pins its host buffer during capture: torch 2.14's host allocator
serves that from the graph's pool (an allocator that cannot would fail the capture there).
"""
from __future__ import annotations

import torch

from . import streams

# Copies issued, eager and captured (tests check when they happen).
stats = {"copies": 0}


class DeviceTable:
    """``values`` (ints) as an int64 tensor on ``device`` (``tensor``)."""

    def __init__(self, values: list[int], device: torch.device):
        self.device = device
        self.host = torch.tensor(values, dtype=torch.int64)
        if device.type == "cuda":
            self.host = self.host.pin_memory()
        self.tensor = torch.empty(len(values), dtype=torch.int64, device=device)
        self.used_in_graph = False
        self._copied_eagerly = False
        self._copy_done = None  # CUDA event recorded after the eager copy
        self._ready_streams: set = set()  # streams whose later work sees the bytes

    def ready(self) -> torch.Tensor:
        """The device tensor, with its bytes in place for work issued now on the current
        stream (or captured into the graph being built)."""
        capturing = streams.capturing(self.device)
        self.used_in_graph |= capturing  # the graph reads this memory at every replay
        stream = streams.stream_key(self.device)
        if stream in self._ready_streams:
            return self.tensor
        if capturing:  # recorded into the graph: lands only when the graph replays
            self._copy()
            return self.tensor
        if not self._copied_eagerly:
            self._copy()
            self._copied_eagerly = True
            if self.device.type == "cuda":
                self._copy_done = torch.cuda.Event()
                self._copy_done.record(torch.cuda.current_stream(self.device))
        elif self._copy_done is not None:
            torch.cuda.current_stream(self.device).wait_event(self._copy_done)
        self._ready_streams.add(stream)
        return self.tensor

    def _copy(self) -> None:
        self.tensor.copy_(self.host, non_blocking=True)
        stats["copies"] += 1
