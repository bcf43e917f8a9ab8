// swd_native::adam_reduce on CUDA: pass 1 of AdamS / AMSGradS / AdaiS. Per table, one block
// per chunk writes the chunk's partial sum, then one block finalizes the table's tensors
// (v_sums, shares of sum(v_hat)); the last table's finalize also sums every share in a fixed
// order and adds the result to accum. No float atomics: the result is bitwise reproducible.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

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
                         double* partials) {
  const int32_t chunk = t.first_chunk[0] + static_cast<int32_t>(blockIdx.x);
  const double sum = reduce_chunk<P, S, kAmsgrad, ReduceTableLists>(
      t, chunk, grad_scale_of(in.amp.grad_scale), in.beta2);
  if (threadIdx.x == 0) partials[chunk] = sum;
}

// One block: a warp per tensor of the table; with `sum_count` > 0 (the bucket's last table)
// also the fixed-order sum of the bucket's shares into accum.
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    finalize_kernel(const __grid_constant__ TensorTable t, const ReduceInputs in,
                    const double* partials, double* shares, int64_t sum_count) {
  const bool skipped = step_skipped(in.amp.found_inf);
  for (int i = threadIdx.x >> 5; i < t.count; i += kWarps) {
    finalize_tensor(t, i, partials, in.beta2, in.amsgrad, skipped, shares);
  }
  if (sum_count == 0) return;
  __syncthreads();  // this block's shares are written
  const double total = sum_shares(shares, sum_count);
  if (threadIdx.x == 0) {
    in.accum[0] += total;
    in.accum[1] += in.elements;
  }
}

template <typename P, typename S, bool kAmsgrad>
void launch_reduce(const BucketPlan& plan, const ReduceInputs& in, double* partials,
                   double* shares) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (size_t k = 0; k < plan.tables.size(); ++k) {
    const TensorTable& table = plan.tables[k];
    const int32_t chunks = BucketPlan::table_chunks(table);
    if (chunks > 0) {
      reduce_chunks_kernel<P, S, kAmsgrad><<<chunks, kThreads, 0, stream>>>(table, in, partials);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const bool last = k + 1 == plan.tables.size();
    finalize_kernel<<<1, kThreads, 0, stream>>>(table, in, partials, shares,
                                                last ? plan.tensors : 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

void adam_reduce(at::TensorList grads, at::TensorList exp_avg_sqs,
                 at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
                 at::TensorList v_sums, const at::Tensor& accum, double beta2, bool amsgrad,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf) {
  const char* op = "swd_native::adam_reduce (CUDA)";
  if (grads.empty()) return;
  const at::Device device = cuda_device_of(grads, op, "grads");
  const c10::cuda::CUDAGuard guard(device);
  std::vector<NamedList> states;
  if (amsgrad) {
    states = {{exp_avg_sqs, "exp_avg_sqs"}, {max_exp_avg_sqs, "max_exp_avg_sqs"}};
  }
  const at::ScalarType state_dtype =
      check_bucket(op, {grads, "grads"}, {}, states, state_steps);
  check_accum(accum, device, op);
  if (!amsgrad) {
    check_count(v_sums, grads.size(), op, "v_sums");
    check_scalar_list(v_sums, at::kDouble, device, op, "v_sums");
  }
  const at::Tensor scale = device_scalar(grad_scale, at::kFloat, device, op, "grad_scale");
  const at::Tensor inf = device_scalar(found_inf, at::kFloat, device, op, "found_inf");

  std::vector<at::TensorList> lists = {grads};
  if (amsgrad) {
    lists.push_back(exp_avg_sqs);
    lists.push_back(max_exp_avg_sqs);
  }
  const BucketPlan plan = plan_bucket(lists, state_steps, amsgrad ? at::TensorList() : v_sums);
  // partials of every chunk, then the share of every tensor
  const at::Tensor workspace = at::empty({plan.chunks + plan.tensors}, accum.options());
  double* partials = workspace.data_ptr<double>();
  double* shares = partials + plan.chunks;
  const ReduceInputs in{{pointer_or_null<float>(scale), pointer_or_null<float>(inf)},
                        accum.data_ptr<double>(), beta2, plan.elements, amsgrad};
  if (amsgrad) {
    dispatch_dtypes(grads[0].scalar_type(), state_dtype, op, [&](auto param_tag, auto state_tag) {
      using P = typename decltype(param_tag)::type;
      using S = typename decltype(state_tag)::type;
      launch_reduce<P, S, true>(plan, in, partials, shares);
    });
  } else {
    dispatch_param_dtype(grads[0].scalar_type(), op, [&](auto param_tag) {
      using P = typename decltype(param_tag)::type;
      launch_reduce<P, P, false>(plan, in, partials, shares);
    });
  }
}

}  // namespace swd::cuda
