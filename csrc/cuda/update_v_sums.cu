// The last launch of an update with 16-bit state (update_launch.cuh): each tensor's v_sum
// from the sums of stored exp_avg_sq its chunks wrote.
#include <c10/cuda/CUDAException.h>

#include "cuda/update_launch.cuh"

namespace swd::cuda {
namespace {

// One block: a warp per tensor of the table.
__global__ void __launch_bounds__(kThreads)
    v_sums_kernel(const __grid_constant__ TensorTable t, const double* v_partials,
                  const float* found_inf) {
  if (step_skipped(found_inf)) return;
  for (int i = threadIdx.x >> 5; i < t.count; i += kWarps) finalize_v_sum(t, i, v_partials);
}

}  // namespace

void launch_v_sums(const TensorTable& table, const double* v_partials, const float* found_inf,
                   cudaStream_t stream) {
  v_sums_kernel<<<1, kThreads, 0, stream>>>(table, v_partials, found_inf);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace swd::cuda
