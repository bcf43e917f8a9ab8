// Pass 2 of every optimizer as launches: per table, a tiny kernel forms each tensor's update
// scalars (and advances its step), then one block per chunk applies the element rule. The
// update kernel never reads a step, so no block can see a step another block advanced. With
// 16-bit state of a rule that keeps v_sums (swd/rules.h kSumsStoredState) each chunk also
// writes the sum of the exp_avg_sq it stored, and a third launch per table turns those into
// each tensor's v_sum (the table must then hold v_sums).
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
                  const AmpInputs amp, const bool maximize, double* v_partials) {
  if (step_skipped(amp.found_inf)) return;
  const int32_t chunk = t.first_chunk[0] + static_cast<int32_t>(blockIdx.x);
  const float stored =
      update_chunk<Rule, P, S>(t, chunk, scalars, grad_options(amp.grad_scale, maximize));
  if constexpr (swd::kSumsStoredState<Rule, S>) store_chunk_v_sum(v_partials, chunk, stored);
}

// The table's v_sums from its chunks' sums of the stored exp_avg_sq, unless found_inf is set:
// one block on `stream` (update_v_sums.cu).
void launch_v_sums(const TensorTable& table, const double* v_partials, const float* found_inf,
                   cudaStream_t stream);

// Two launches per table of at most kTableCapacity tensors (three with kSums), on the current
// stream.
template <typename Rule, typename P, typename S>
void launch_update(const ChunkLayout& layout, const typename Rule::Hyper& hyper,
                   const StepInputs& inputs, const AmpInputs& amp, bool maximize,
                   const at::TensorOptions& device_options) {
  using Scalars = typename Rule::Scalars;
  constexpr bool kSums = swd::kSumsStoredState<Rule, S>;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // the per-tensor scalars, then (kSums) a float64 sum per chunk
  const int64_t scalar_doubles =
      (layout.tensors * static_cast<int64_t>(sizeof(Scalars)) + 7) / 8;
  const at::Tensor workspace = at::empty({scalar_doubles + (kSums ? layout.chunks : 0)},
                                         device_options.dtype(at::kDouble));
  auto* scalars = reinterpret_cast<Scalars*>(workspace.data_ptr());
  double* v_partials = workspace.data_ptr<double>() + scalar_doubles;
  for (const TensorTable& table : layout.tables) {
    const int prepare_blocks = (table.count + kPrepareThreads - 1) / kPrepareThreads;
    prepare_kernel<Rule><<<prepare_blocks, kPrepareThreads, 0, stream>>>(table, hyper, inputs,
                                                                          scalars);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int32_t chunks = ChunkLayout::table_chunks(table);
    if (chunks > 0) {
      update_kernel<Rule, P, S><<<chunks, kThreads, 0, stream>>>(table, scalars, amp, maximize,
                                                                 v_partials);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if constexpr (kSums) launch_v_sums(table, v_partials, amp.found_inf, stream);
  }
}

}  // namespace swd::cuda
