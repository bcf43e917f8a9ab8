// swd_native::adam_reduce on CUDA: pass 1 of AdamS / AMSGradS / AdaiS. Per table, one block
// per chunk writes the chunk's partial sums, then one block finalizes the table's tensors
// (v_sums, shares of accum); the last table's finalize also sums every share in a fixed order
// and adds the totals to accum. No float atomics: on one device and build the result is
// bitwise repeatable.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "cuda/chunk_phases.cuh"
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"

namespace swd::cuda {
namespace {

// Reduce tables hold grad, exp_avg_sq, max_exp_avg_sq (the last two for AMSGradS only).
using ReduceTableLists = ReduceLists<0, 1, 2>;

template <typename P, typename S, bool kAmsgrad>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    reduce_chunks_kernel(const __grid_constant__ TensorTable t, const ReduceInputs in,
                         const ReduceWorkspace w) {
  const int32_t chunk = t.first_chunk[0] + static_cast<int32_t>(blockIdx.x);
  const ChunkSums sums = reduce_chunk<P, S, kAmsgrad, ReduceTableLists>(
      t, chunk, grad_options(in.amp.grad_scale, false), in.beta2);
  store_chunk_sums<kAmsgrad>(w, chunk, sums);
}

// One block: a warp per tensor of the table; with `sum_count` > 0 (the bucket's last table)
// also the fixed-order sums of the bucket's shares, added to accum.
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    finalize_kernel(const __grid_constant__ TensorTable t, const ReduceInputs in,
                    const ReduceWorkspace w, int64_t sum_count) {
  const bool skipped = step_skipped(in.amp.found_inf);
  for (int i = threadIdx.x >> 5; i < t.count; i += kWarps) {
    finalize_tensor(t, i, w, in.beta2, in.amsgrad, skipped);
  }
  if (sum_count == 0) return;
  __syncthreads();  // this block's shares are written
  const TensorShares totals = sum_shares(w.shares, sum_count);
  if (threadIdx.x == 0) {
    store_accum(in.accum, accum_after(in.accum, totals, in.elements, in.amsgrad));
  }
}

template <typename P, typename S, bool kAmsgrad>
void launch_reduce(const ChunkLayout& layout, const ReduceInputs& in, const ReduceWorkspace& w) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (size_t k = 0; k < layout.tables.size(); ++k) {
    const TensorTable& table = layout.tables[k];
    const int32_t chunks = ChunkLayout::table_chunks(table);
    if (chunks > 0) {
      reduce_chunks_kernel<P, S, kAmsgrad><<<chunks, kThreads, 0, stream>>>(table, in, w);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const bool last = k + 1 == layout.tables.size();
    finalize_kernel<<<1, kThreads, 0, stream>>>(table, in, w, last ? layout.tensors : 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

void adam_reduce(const AdamReduceArgs& a) {
  if (a.grads.empty()) return;
  const CheckedCall call(a, "swd_native::adam_reduce (CUDA)", {}, a.grad_scale,
                         a.found_inf);

  std::vector<at::TensorList> lists = {a.grads};
  if (a.amsgrad) {
    lists.push_back(a.exp_avg_sqs);
    lists.push_back(a.max_exp_avg_sqs);
  }
  const ChunkLayout layout =
      chunk_layout(lists, a.state_steps, a.amsgrad ? at::TensorList() : a.v_sums);
  const at::Tensor workspace =
      at::empty({reduce_workspace_doubles(layout, a.amsgrad)}, a.accum.options());
  const ReduceWorkspace w = reduce_workspace(layout, a.amsgrad, workspace.data_ptr<double>());
  const ReduceInputs in{call.scalars.amp(), a.accum.data_ptr<double>(), a.beta2, layout.elements,
                        a.amsgrad};
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    if (a.amsgrad) {
      launch_reduce<P, S, true>(layout, in, w);
    } else {
      launch_reduce<P, P, false>(layout, in, w);  // reads no state
    }
  });
}

}  // namespace swd::cuda
