// Pass 2 of every optimizer as launches: per table, a tiny kernel forms each tensor's update
// scalars (and advances its step), then one block per chunk applies the element rule. The
// update kernel never reads a step, so no block can see a step another block advanced.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include "cuda/chunk_phases.cuh"

namespace swd::cuda {

constexpr int kPrepareThreads = 128;

template <typename Rule>
__global__ void prepare_kernel(const __grid_constant__ TensorTable t,
                               const typename Rule::Hyper h, const StepInputs in,
                               typename Rule::Scalars* scalars) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= t.count) return;
  const double lr = step_lr(in);
  const double v_bar = in.accum != nullptr
                           ? swd::global_mean(in.accum[swd::kVhatSum], in.accum[swd::kCount])
                           : 0.0;
  prepare_tensor<Rule>(t, i, h, lr, v_bar, step_skipped(in.found_inf), scalars);
}

template <typename Rule, typename P, typename S>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    update_kernel(const __grid_constant__ TensorTable t, const typename Rule::Scalars* scalars,
                  const AmpInputs amp, const bool maximize) {
  if (step_skipped(amp.found_inf)) return;
  update_chunk<Rule, P, S>(t, t.first_chunk[0] + static_cast<int32_t>(blockIdx.x), scalars,
                           grad_options(amp.grad_scale, maximize));
}

// Two launches per table of at most kTableCapacity tensors, on the current stream.
template <typename Rule, typename P, typename S>
void launch_update(const BucketPlan& plan, const typename Rule::Hyper& hyper,
                   const StepInputs& inputs, const AmpInputs& amp, bool maximize,
                   const at::TensorOptions& device_options) {
  using Scalars = typename Rule::Scalars;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor workspace = at::empty(
      {plan.tensors * static_cast<int64_t>(sizeof(Scalars))}, device_options.dtype(at::kByte));
  auto* scalars = reinterpret_cast<Scalars*>(workspace.data_ptr());
  for (const TensorTable& table : plan.tables) {
    const int prepare_blocks = (table.count + kPrepareThreads - 1) / kPrepareThreads;
    prepare_kernel<Rule><<<prepare_blocks, kPrepareThreads, 0, stream>>>(table, hyper, inputs,
                                                                          scalars);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int32_t chunks = BucketPlan::table_chunks(table);
    if (chunks > 0) {
      update_kernel<Rule, P, S><<<chunks, kThreads, 0, stream>>>(table, scalars, amp, maximize);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

}  // namespace swd::cuda
