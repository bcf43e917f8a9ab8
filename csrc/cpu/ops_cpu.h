// The swd_native ops on CPU tensors (implemented in ops_cpu.cpp); csrc/ops.cpp registers them.
#pragma once

#define SWD_OPS_NAMESPACE cpu
#include "swd/op_signatures.inc"
#undef SWD_OPS_NAMESPACE
