// Registers the CUDA kernels for the swd_native ops (schemas: swd_kernels/ops.py, defined
// from Python before this library loads; CPU kernels: csrc/ops.cpp).
#include <torch/library.h>

#include "cuda/ops_cuda.cuh"

TORCH_LIBRARY_IMPL(swd_native, CUDA, m) {
  m.impl("adam_reduce", &swd::cuda::adam_reduce);
  m.impl("adam_update", &swd::cuda::adam_update);
  m.impl("adam_step", &swd::cuda::adam_step);
  m.impl("adai_update", &swd::cuda::adai_update);
  m.impl("sgd_update", &swd::cuda::sgd_update);
}
