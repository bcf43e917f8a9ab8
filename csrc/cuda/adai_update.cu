// swd_native::adai_update on CUDA: the AdaiS update (its reduction is adam_reduce; with 16-bit
// state v_sums set to the sums of the stored exp_avg_sq).
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void adai_update(const AdaiUpdateArgs& a) {
  if (a.params.empty()) return;
  const CheckedCall call(a, "swd_native::adai_update (CUDA)", a.lr_tensor, a.grad_scale,
                         a.found_inf);

  const ChunkLayout layout = chunk_layout(
      {a.params, a.grads, a.exp_avgs, a.exp_avg_sqs, a.beta1_prods}, a.state_steps,
      update_writes_v_sums(call.bucket.state_dtype, false) ? a.v_sums : at::TensorList());
  const StepInputs inputs = call.scalars.step(a.lr, a.accum.const_data_ptr<double>());
  const AdaiRule::Hyper hyper{a.beta0, a.beta2, a.weight_decay, a.eps};
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    launch_update<AdaiRule, P, S>(layout, hyper, inputs, call.scalars.amp(), a.maximize,
                                  a.accum.options());
  });
}

}  // namespace swd::cuda
