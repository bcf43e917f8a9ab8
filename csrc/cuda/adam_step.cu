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
                     const AdamHyper hyper, const StepInputs step_in, const UpdateFlags flags,
                     const StepWorkspace w) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const bool skipped = step_skipped(in.amp.found_inf);
  const swd::GradOptions unscale = grad_options(in.amp.grad_scale, false);
  const swd::GradOptions grad = grad_options(in.amp.grad_scale, flags.maximize);
  // read before block 0 writes accum (after the second sync)
  const double accum_sum = in.accum[0];
  const double accum_count = in.accum[1];
  const int32_t chunks = t.first_chunk[t.count];

  for (int32_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const double sum =
        reduce_chunk<P, S, kAmsgrad, StepTableLists>(t, c, unscale, in.beta2);
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
    update_chunk<AdamRule<kAmsgrad>, P, S>(t, c, w.scalars, grad);
  }
}

// Launches the cooperative step; false when this device cannot run it co-resident.
template <typename P, typename S, bool kAmsgrad>
bool launch_cooperative_step(const BucketPlan& plan, const ReduceInputs& in,
                             const AdamHyper& hyper, const StepInputs& step_in, bool maximize,
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
  AdamHyper h = hyper;
  StepInputs s = step_in;
  UpdateFlags f{maximize};
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

void adam_step(const AdamStepArgs& args) {
  const AdamUpdateArgs& a = args.update;
  if (a.params.empty()) return;
  const CheckedCall call(args, "swd_native::adam_step (CUDA)", a.lr_tensor, a.grad_scale,
                         a.found_inf);
  auto two_ops = [&] {
    adam_reduce(args.reduce());
    adam_update(a);
  };
  if (a.params.size() > static_cast<size_t>(kTableCapacity) ||
      !cooperative_wanted(call.bucket.device)) {
    two_ops();
    return;
  }
  std::vector<at::TensorList> lists = {a.params, a.grads, a.exp_avgs, a.exp_avg_sqs};
  if (a.amsgrad) lists.push_back(a.max_exp_avg_sqs);
  const BucketPlan plan =
      plan_bucket(lists, a.state_steps, a.amsgrad ? at::TensorList() : args.v_sums);
  // doubles: partials per chunk, shares per tensor, then the per-tensor scalars
  const int64_t scalar_doubles =
      (plan.tensors * static_cast<int64_t>(sizeof(swd::AdamScalars)) + 7) / 8;
  const at::Tensor workspace =
      at::empty({plan.chunks + plan.tensors + scalar_doubles}, a.accum.options());
  double* base = workspace.data_ptr<double>();
  const StepWorkspace w{base, base + plan.chunks,
                        reinterpret_cast<swd::AdamScalars*>(base + plan.chunks + plan.tensors)};
  const ReduceInputs in{call.scalars.amp(), a.accum.data_ptr<double>(), a.beta2, plan.elements,
                        a.amsgrad};
  const StepInputs step_in = call.scalars.step(a.lr, a.accum.const_data_ptr<double>());
  const AdamHyper hyper{a.beta1, a.beta2, a.weight_decay, a.eps, a.decay_power, a.decay_eps};
  bool launched = false;
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    launched = a.amsgrad
                   ? launch_cooperative_step<P, S, true>(plan, in, hyper, step_in, a.maximize, w)
                   : launch_cooperative_step<P, S, false>(plan, in, hyper, step_in, a.maximize, w);
  });
  if (!launched) two_ops();
}

}  // namespace swd::cuda
