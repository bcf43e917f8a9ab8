"""Where the triton backend's work is issued: on the bucket's device, on that device's current
stream, which may be capturing a CUDA graph.

Triton launches on its current device and that device's current torch stream, so every
launcher enters ``on_device(bucket's device)`` first: a bucket on ``cuda:1`` then runs on
``cuda:1`` even while ``cuda:0`` is the current device. ``stream_key`` names the stream that
work issued now lands on (workspaces are kept per stream, device_tables.py orders copies by
it). ``capturing`` says whether that stream is capturing a CUDA graph; tests force it on CPU
to run the capture paths.
"""
from __future__ import annotations

import contextlib

import torch


def capturing(device: torch.device) -> bool:
    """Whether work issued now on ``device`` is captured into a CUDA graph, not run."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):  # torch asks the current device's stream
        return torch.cuda.is_current_stream_capturing()


def stream_key(device: torch.device):
    """The current stream of ``device`` as a hashable key (None off CUDA: one stream)."""
    if device.type != "cuda":
        return None
    stream = torch.cuda.current_stream(device)
    return stream.device_index, stream.stream_id


def on_device(device: torch.device):
    """A context in which launches go to ``device`` (a no-op off CUDA)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)
