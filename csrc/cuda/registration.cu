// Registers the CUDA kernels for the swd_native ops (schemas: swd_kernels/ops.py, defined
// from Python before this library loads; CPU kernels: csrc/ops.cpp).
#include <torch/library.h>

#include "cuda/ops_cuda.cuh"

TORCH_LIBRARY_IMPL(swd_native, CUDA, m) { swd::cuda::register_ops(m); }
