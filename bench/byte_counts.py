"""Bytes one optimizer step must move per element (docs/design.md §5): the traffic a
bandwidth-bound step cannot avoid, used to turn a time into GB/s. With ``P`` bytes per param
element, ``G`` per grad element (= P) and ``S`` per state element:

    AdamW     read p g m v, write p m v                          2P + G + 4S    fp32: 28
    AdamS     + pass 1 reads g (Σv by the linear identity)       2P + 2G + 4S   fp32: 32
    AMSGradS  pass 1 reads g v vmax; pass 2 = AdamW + vmax r/w   2P + 2G + 8S   fp32: 48
    SGDS      read p g buf, write p buf (momentum > 0)           2P + G + 2S    fp32: 20
    AdaiS     pass 1 reads g; pass 2 r/w p m v beta1_prod, r g   2P + 2G + 6S   fp32: 40
    AdamW+clip  clip_grad_norm_: reads g (norm), r/w g (scale);
                then AdamW                                       2P + 4G + 4S   fp32: 40
    AdamS+clip  the norm comes from pass 1: AdamS's bytes         2P + 2G + 4S   fp32: 32

AMSGradS cannot use the linear identity: its pass 1 must read v and vmax as well as g, so 48.
With clipping, AMSGradS (its max needs the clipped v) and SGDS read the grads once more for the
norm before their passes: + G (AMSGradS 52, SGDS 24 in fp32); AdaiS, like AdamS, gets the norm
from pass 1 (40). The grads are never written.
bf16 params/grads with fp32 state: AdamS 2·2 + 2·2 + 4·4 = 24 B, AdamW (torch keeps bf16
state for bf16 params) 2·2 + 2 + 4·2 = 14 B; with bf16 state AdamS is 2·2 + 2·2 + 4·2 = 16 B
(its running sums come from the v the update stores: no extra read). The per-tensor
reference loop and its compiled
version are counted as AdamS (the algorithm's minimum), so their GB/s is an effective rate.
"""
from __future__ import annotations

import torch

# (param+grad factor, grad-only factor, state factor) per algorithm: bytes = a·P + b·G + c·S
_FACTORS = {
    "AdamW": (2, 1, 4),
    "AdamS": (2, 2, 4),
    "AMSGradS": (2, 2, 8),
    "SGDS": (2, 1, 2),
    "AdaiS": (2, 2, 6),
    "AdamW+clip": (2, 4, 4),
    "AdamS+clip": (2, 2, 4),
}


def bytes_per_element(algorithm: str, param_dtype: torch.dtype, state_dtype: torch.dtype) -> int:
    p_factor, g_factor, s_factor = _FACTORS[algorithm]
    p = torch.tensor([], dtype=param_dtype).element_size()
    s = torch.tensor([], dtype=state_dtype).element_size()
    return p_factor * p + g_factor * p + s_factor * s


def formula(algorithm: str) -> str:
    a, b, c = _FACTORS[algorithm]
    return f"{a}P+{b}G+{c}S"
