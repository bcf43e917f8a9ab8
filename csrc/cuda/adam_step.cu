// swd_native::adam_step on CUDA: the whole AdamS / AMSGradS step of one bucket in ONE
// cooperative launch. A persistent grid (as many blocks as can be co-resident) runs:
//   1. per-chunk partial sums                          (reduce_chunk)
//   -- grid sync --
//   2. per-tensor finalize, a warp per tensor          (finalize_tensor: v_sums, shares)
//   -- grid sync --
//   3. every block sums the shares in the same fixed order -> accum's new values, v_bar;
//      per-tensor update scalars, steps advanced       (accum_after, prepare_tensor)
//   -- grid sync --
//   4. block 0 stores accum (every block has read it); the element-wise update
//                                                      (update_chunk)
//   with 16-bit state (AdamS), also per chunk the sum of the stored exp_avg_sq
//   -- grid sync --
//   5. per-tensor v_sums from those sums, a warp per tensor (finalize_v_sum)
// The pieces are those of adam_reduce + adam_update, so on one device and build both paths
// give the same bits.
//
// Falls back to adam_reduce + adam_update when the device has no cooperative launch, the grid
// cannot be co-resident, the bucket does not fit one table, or SWD_KERNELS_NO_COOPERATIVE=1.
// That variable is read once, at the first adam_step on CUDA of the process; the device's
// cooperative support, SM count and each kernel's resident blocks are asked once per device,
// so a step makes no driver query besides the launch.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "cuda/chunk_phases.cuh"
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"

namespace swd::cuda {
namespace {

// Step tables hold param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq].
using StepTableLists = ReduceLists<1, 3, 4>;

struct StepWorkspace {
  ReduceWorkspace reduce;
  swd::AdamScalars* scalars;  // per tensor
};

template <typename P, typename S, bool kAmsgrad>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    adam_step_kernel(const __grid_constant__ TensorTable t, const ReduceInputs in,
                     const AdamHyper hyper, const StepInputs step_in, const bool maximize,
                     const StepWorkspace w) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const bool skipped = step_skipped(in.amp.found_inf);
  const int32_t chunks = t.first_chunk[t.count];

  {
    const swd::GradOptions unscale = grad_options(in.amp.grad_scale, false);
    for (int32_t c = blockIdx.x; c < chunks; c += gridDim.x) {
      store_chunk_sums<kAmsgrad>(
          w.reduce, c, reduce_chunk<P, S, kAmsgrad, StepTableLists>(t, c, unscale, in.beta2));
    }
  }
  grid.sync();

  const int warps = gridDim.x * kWarps;
  for (int i = blockIdx.x * kWarps + (threadIdx.x >> 5); i < t.count; i += warps) {
    finalize_tensor(t, i, w.reduce, in.beta2, kAmsgrad, skipped);
  }
  grid.sync();

  // the same operations as finalize_kernel's accum update and prepare_kernel's v_bar; the new
  // accum waits in shared memory (in registers across the prepare loop it spilled)
  __shared__ AccumValues new_accum;
  {
    const AccumValues accum =
        accum_after(in.accum, sum_shares(w.reduce.shares, t.count), in.elements, kAmsgrad);
    if (threadIdx.x == 0) new_accum = accum;
    const double lr = step_lr(step_in);
    const double v_bar = swd::global_mean(accum.v[swd::kVhatSum], accum.v[swd::kCount]);
    // one thread per tensor, all in block 0 (a loop over the grid kept its stride live
    // through the double-precision scalars and spilled it)
    static_assert(kTableCapacity <= kThreads, "block 0 prepares every tensor of the table");
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i < t.count) prepare_tensor<AdamRule<kAmsgrad>>(t, i, hyper, lr, v_bar, skipped, w.scalars);
  }
  grid.sync();

  if (blockIdx.x == 0 && threadIdx.x == 0) store_accum(in.accum, new_accum);
  if (skipped) return;  // uniform over the grid
  constexpr bool kSums = swd::kSumsStoredState<AdamRule<kAmsgrad>, S>;
  for (int32_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const float stored = update_chunk<AdamRule<kAmsgrad>, P, S>(
        t, c, w.scalars, grad_options(in.amp.grad_scale, maximize));
    // the reduction's partials were last read in phase 2: free to hold these sums
    if constexpr (kSums) store_chunk_v_sum(w.reduce.partials, c, stored);
  }
  if constexpr (kSums) {
    grid.sync();
    for (int i = blockIdx.x * kWarps + (threadIdx.x >> 5); i < t.count; i += warps) {
      finalize_v_sum(t, i, w.reduce.partials);
    }
  }
}

// What the cooperative launch needs to know of a device, asked once per device.
struct DeviceInfo {
  bool cooperative;  // cudaDevAttrCooperativeLaunch
  int sms;           // multiprocessors
};

const DeviceInfo& device_info(int device) {
  static std::once_flag asked[C10_COMPILE_TIME_MAX_GPUS];
  static DeviceInfo info[C10_COMPILE_TIME_MAX_GPUS];
  TORCH_INTERNAL_ASSERT(device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS, "device ", device);
  std::call_once(asked[device], [device] {
    int cooperative = 0;
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&info[device].sms, cudaDevAttrMultiProcessorCount, device));
    info[device].cooperative = cooperative != 0;
  });
  return info[device];
}

// How many blocks of adam_step_kernel<P, S, kAmsgrad> one SM of the current device (`device`)
// holds at once, asked once per device.
template <typename P, typename S, bool kAmsgrad>
int resident_blocks_per_sm(int device) {
  static std::once_flag asked[C10_COMPILE_TIME_MAX_GPUS];
  static int blocks[C10_COMPILE_TIME_MAX_GPUS];
  TORCH_INTERNAL_ASSERT(device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS, "device ", device);
  std::call_once(asked[device], [device] {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &blocks[device], adam_step_kernel<P, S, kAmsgrad>, kThreads, 0));
  });
  return blocks[device];
}

// SWD_KERNELS_NO_COOPERATIVE=1, read at the first call.
bool cooperative_switched_off() {
  static const bool off = [] {
    const char* value = std::getenv("SWD_KERNELS_NO_COOPERATIVE");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return off;
}

// Launches the cooperative step on the current device (`device`); false when the device
// cannot run it co-resident.
template <typename P, typename S, bool kAmsgrad>
bool launch_cooperative_step(int device, const ChunkLayout& layout, const ReduceInputs& in,
                             const AdamHyper& hyper, const StepInputs& step_in, bool maximize,
                             const StepWorkspace& workspace) {
  const int blocks_per_sm = resident_blocks_per_sm<P, S, kAmsgrad>(device);
  if (blocks_per_sm < 1) return false;
  const int grid = std::max(
      1, std::min(blocks_per_sm * device_info(device).sms, static_cast<int>(layout.chunks)));
  // cudaLaunchCooperativeKernel takes pointers to (non-const copies of) the arguments
  TensorTable table = layout.tables[0];
  ReduceInputs reduce_in = in;
  AdamHyper h = hyper;
  StepInputs s = step_in;
  bool m = maximize;
  StepWorkspace w = workspace;
  void* args[] = {&table, &reduce_in, &h, &s, &m, &w};
  const cudaError_t error = cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(adam_step_kernel<P, S, kAmsgrad>), dim3(grid),
      dim3(kThreads), args, 0, c10::cuda::getCurrentCUDAStream());
  if (error == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // clear it; the caller falls back to two ops
    return false;
  }
  C10_CUDA_CHECK(error);
  return true;
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
  const int device = call.bucket.device.index();
  if (a.params.size() > static_cast<size_t>(kTableCapacity) || cooperative_switched_off() ||
      !device_info(device).cooperative) {
    two_ops();
    return;
  }
  std::vector<at::TensorList> lists = {a.params, a.grads, a.exp_avgs, a.exp_avg_sqs};
  if (a.amsgrad) lists.push_back(a.max_exp_avg_sqs);
  const ChunkLayout layout =
      chunk_layout(lists, a.state_steps, a.amsgrad ? at::TensorList() : a.v_sums);
  // float64 elements: the reduction's partials and shares, then the per-tensor scalars
  const int64_t reduce_doubles = reduce_workspace_doubles(layout, a.amsgrad);
  const int64_t scalar_doubles =
      (layout.tensors * static_cast<int64_t>(sizeof(swd::AdamScalars)) + 7) / 8;
  const at::Tensor workspace =
      at::empty({reduce_doubles + scalar_doubles}, a.accum.options());
  double* base = workspace.data_ptr<double>();
  const StepWorkspace w{reduce_workspace(layout, a.amsgrad, base),
                        reinterpret_cast<swd::AdamScalars*>(base + reduce_doubles)};
  const ReduceInputs in{call.scalars.amp(), a.accum.data_ptr<double>(), a.beta2, layout.elements,
                        a.amsgrad};
  const StepInputs step_in = call.scalars.step(a.lr, a.accum.const_data_ptr<double>());
  const AdamHyper hyper{a.beta1, a.beta2, a.weight_decay, a.eps, a.decay_power, a.decay_eps};
  bool launched = false;
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    launched = a.amsgrad ? launch_cooperative_step<P, S, true>(device, layout, in, hyper,
                                                               step_in, a.maximize, w)
                         : launch_cooperative_step<P, S, false>(device, layout, in, hyper,
                                                                step_in, a.maximize, w);
  });
  if (!launched) two_ops();
}

}  // namespace swd::cuda
