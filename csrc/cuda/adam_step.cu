// swd_native::adam_step on CUDA: the whole AdamS / AMSGradS step of one bucket in ONE
// cooperative launch. A persistent grid (as many blocks as can be co-resident) runs:
//   1. per-chunk partial sums                          (reduce_chunk)
//   -- grid sync --
//   2. per-tensor finalize, a warp per tensor          (finalize_tensor: v_sums, shares)
//   -- grid sync --
//   3. every block sums the shares in the same fixed order -> accum, v_bar; per-tensor
//      update scalars, steps advanced                  (prepare_tensor)
//   -- grid sync --
//   4. the element-wise update                         (update_chunk)
// The pieces are those of adam_reduce + adam_update, so both paths give the same numbers.
// Falls back to adam_reduce + adam_update when the device has no cooperative launch, the
// bucket does not fit one table, or SWD_KERNELS_NO_COOPERATIVE=1.
#include <cooperative_groups.h>

#include <cstdlib>
#include <cstring>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/chunk_phases.cuh"
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"

namespace swd::cuda {
namespace {

// Step tables hold param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq].
using StepTableLists = ReduceLists<1, 3, 4>;

struct StepWorkspace {
  double* partials;             // per chunk
  double* shares;               // per tensor
  swd::AdamScalars* scalars;    // per tensor
};

template <typename P, typename S, bool kAmsgrad>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    adam_step_kernel(const __grid_constant__ TensorTable t, const ReduceInputs in,
                     const typename AdamRule<kAmsgrad>::Hyper hyper, const StepInputs step_in,
                     const UpdateFlags flags, const StepWorkspace w) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const bool skipped = step_skipped(in.amp.found_inf);
  const float scale = grad_scale_of(in.amp.grad_scale);
  // read before block 0 writes accum (after the second sync)
  const double accum_sum = in.accum[0];
  const double accum_count = in.accum[1];
  const int32_t chunks = t.first_chunk[t.count];

  for (int32_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const double sum = reduce_chunk<P, S, kAmsgrad, StepTableLists>(
        t, c, scale, in.beta2);
    if (threadIdx.x == 0) w.partials[c] = sum;
  }
  grid.sync();

  const int warps = gridDim.x * kWarps;
  for (int i = blockIdx.x * kWarps + (threadIdx.x >> 5); i < t.count; i += warps) {
    finalize_tensor(t, i, w.partials, in.beta2, kAmsgrad, skipped, w.shares);
  }
  grid.sync();

  // the same operations as finalize_kernel's `accum += ...` and prepare_kernel's v_bar
  const double sum = accum_sum + sum_shares(w.shares, t.count);
  const double count = accum_count + in.elements;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    in.accum[0] = sum;
    in.accum[1] = count;
  }
  const double lr = step_lr(step_in);
  const double v_bar = swd::global_mean(sum, count);
  const int threads = gridDim.x * kThreads;
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < t.count; i += threads) {
    prepare_tensor<AdamRule<kAmsgrad>>(t, i, hyper, lr, v_bar, skipped, w.scalars);
  }
  grid.sync();

  if (skipped) return;  // uniform over the grid: no sync follows
  for (int32_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    update_chunk<AdamRule<kAmsgrad>, P, S>(t, c, w.scalars, scale, flags);
  }
}

// Launches the cooperative step; false when this device cannot run it co-resident.
template <typename P, typename S, bool kAmsgrad>
bool launch_cooperative_step(const BucketPlan& plan, const ReduceInputs& in,
                             const typename AdamRule<kAmsgrad>::Hyper& hyper,
                             const StepInputs& step_in, const UpdateFlags& flags,
                             const StepWorkspace& workspace) {
  auto kernel = adam_step_kernel<P, S, kAmsgrad>;
  int blocks_per_sm = 0;
  C10_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, kThreads, 0));
  if (blocks_per_sm < 1) return false;
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int grid = std::max(1, std::min(blocks_per_sm * sms, static_cast<int>(plan.chunks)));
  // cudaLaunchCooperativeKernel takes pointers to (non-const copies of) the arguments
  TensorTable table = plan.tables[0];
  ReduceInputs reduce_in = in;
  typename AdamRule<kAmsgrad>::Hyper h = hyper;
  StepInputs s = step_in;
  UpdateFlags f = flags;
  StepWorkspace w = workspace;
  void* args[] = {&table, &reduce_in, &h, &s, &f, &w};
  const cudaError_t error = cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(kernel), dim3(grid), dim3(kThreads), args, 0,
      c10::cuda::getCurrentCUDAStream());
  if (error == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // clear it; the caller falls back to two ops
    return false;
  }
  C10_CUDA_CHECK(error);
  return true;
}

bool cooperative_wanted(const at::Device& device) {
  const char* off = std::getenv("SWD_KERNELS_NO_COOPERATIVE");
  if (off != nullptr && std::strcmp(off, "1") == 0) return false;
  int supported = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, device.index()));
  return supported != 0;
}

}  // namespace

void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
               at::TensorList state_steps, at::TensorList v_sums, const at::Tensor& accum,
               const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
               double weight_decay, double eps, double decay_power, double decay_eps,
               bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
               const OptionalTensor& found_inf) {
  const char* op = "swd_native::adam_step (CUDA)";
  if (params.empty()) return;
  const at::Device device = cuda_device_of(params, op, "params");
  const c10::cuda::CUDAGuard guard(device);
  auto two_ops = [&] {
    adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                amsgrad, grad_scale, found_inf);
    adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, accum,
                lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                amsgrad, maximize, grad_scale, found_inf);
  };
  if (params.size() > static_cast<size_t>(kTableCapacity) || !cooperative_wanted(device)) {
    two_ops();
    return;
  }
  std::vector<NamedList> states = {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}};
  if (amsgrad) states.push_back({max_exp_avg_sqs, "max_exp_avg_sqs"});
  const at::ScalarType state_dtype =
      check_bucket(op, {params, "params"}, {{grads, "grads"}}, states, state_steps);
  check_accum(accum, device, op);
  if (!amsgrad) {
    check_count(v_sums, params.size(), op, "v_sums");
    check_scalar_list(v_sums, at::kDouble, device, op, "v_sums");
  }
  const at::Tensor lr_value = device_lr(lr_tensor, device, op);
  const at::Tensor scale = device_scalar(grad_scale, at::kFloat, device, op, "grad_scale");
  const at::Tensor inf = device_scalar(found_inf, at::kFloat, device, op, "found_inf");

  std::vector<at::TensorList> lists = {params, grads, exp_avgs, exp_avg_sqs};
  if (amsgrad) lists.push_back(max_exp_avg_sqs);
  const BucketPlan plan = plan_bucket(lists, state_steps, amsgrad ? at::TensorList() : v_sums);
  // doubles: partials per chunk, shares per tensor, then the per-tensor scalars
  const int64_t scalar_doubles =
      (plan.tensors * static_cast<int64_t>(sizeof(swd::AdamScalars)) + 7) / 8;
  const at::Tensor workspace =
      at::empty({plan.chunks + plan.tensors + scalar_doubles}, accum.options());
  double* base = workspace.data_ptr<double>();
  const StepWorkspace w{base, base + plan.chunks,
                        reinterpret_cast<swd::AdamScalars*>(base + plan.chunks + plan.tensors)};
  const AmpInputs amp{pointer_or_null<float>(scale), pointer_or_null<float>(inf)};
  const ReduceInputs in{amp, accum.data_ptr<double>(), beta2, plan.elements, amsgrad};
  const StepInputs step_in{lr_f32(lr_value), lr_f64(lr_value), lr, accum.const_data_ptr<double>(),
                           pointer_or_null<float>(inf)};
  const UpdateFlags flags{maximize, false};
  bool launched = false;
  dispatch_dtypes(params[0].scalar_type(), state_dtype, op, [&](auto param_tag, auto state_tag) {
    using P = typename decltype(param_tag)::type;
    using S = typename decltype(state_tag)::type;
    if (amsgrad) {
      const AdamRule<true>::Hyper h{beta1, beta2, weight_decay, eps, decay_power,
                                             decay_eps};
      launched = launch_cooperative_step<P, S, true>(plan, in, h, step_in, flags, w);
    } else {
      const AdamRule<false>::Hyper h{beta1, beta2, weight_decay, eps, decay_power,
                                              decay_eps};
      launched = launch_cooperative_step<P, S, false>(plan, in, h, step_in, flags, w);
    }
  });
  if (!launched) two_ops();
}

}  // namespace swd::cuda
