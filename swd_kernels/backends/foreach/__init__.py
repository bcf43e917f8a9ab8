"""The ``torch`` backend: the op contract in foreach ops, on any device. The reference that the
fast backends are held to, and the fallback that always works."""
from __future__ import annotations

from ... import ops
from .adai import adai_update
from .adam import adam_reduce, adam_update
from .sgd import sgd_update

NAME = "torch"

_lib = ops.define(NAME)
for _name, _fn in (("adam_reduce", adam_reduce), ("adam_update", adam_update),
                   ("adai_update", adai_update), ("sgd_update", sgd_update)):
    _lib.impl(_name, _fn, "CompositeExplicitAutograd")


def unavailable_reason(device) -> str | None:
    return None
