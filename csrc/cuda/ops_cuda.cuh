// The swd_native ops on CUDA tensors; registration.cu registers them for the CUDA dispatch
// key.
#pragma once

#define SWD_OPS_NAMESPACE cuda
#include "swd/op_signatures.inc"
#undef SWD_OPS_NAMESPACE
