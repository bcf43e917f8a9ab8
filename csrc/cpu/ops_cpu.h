// The swd_native ops on CPU tensors. They check their inputs, read the step-wide scalars on
// the host and run the kernels of kernels.h; csrc/ops.cpp registers them.
#pragma once

#define SWD_OPS_NAMESPACE cpu
#include "swd/op_signatures.inc"
#undef SWD_OPS_NAMESPACE
