// swd_native::adam_update on CUDA: pass 2 of AdamS / AMSGradS (v_bar read from accum on the
// device; with 16-bit state v_sums set to the sums of the stored exp_avg_sq).
#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void adam_update(const AdamUpdateArgs& a) {
  if (a.params.empty()) return;
  const CheckedCall call(a, "swd_native::adam_update (CUDA)", a.lr_tensor, a.grad_scale,
                         a.found_inf);

  std::vector<at::TensorList> lists = {a.params, a.grads, a.exp_avgs, a.exp_avg_sqs};
  if (a.amsgrad) lists.push_back(a.max_exp_avg_sqs);
  const ChunkLayout layout = chunk_layout(
      lists, a.state_steps,
      update_writes_v_sums(call.bucket.state_dtype, a.amsgrad) ? a.v_sums : at::TensorList());
  const StepInputs inputs = call.scalars.step(a.lr, a.accum.const_data_ptr<double>());
  const AdamHyper hyper{a.beta1, a.beta2, a.weight_decay, a.eps, a.decay_power, a.decay_eps};
  const Bucket& bucket = call.bucket;
  CudaDtypePairs::dispatch(bucket.param_dtype, bucket.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    if (a.amsgrad) {
      launch_update<AdamRule<true>, P, S>(layout, hyper, inputs, call.scalars.amp(), a.maximize,
                                          a.accum.options());
    } else {
      launch_update<AdamRule<false>, P, S>(layout, hyper, inputs, call.scalars.amp(), a.maximize,
                                           a.accum.options());
    }
  });
}

}  // namespace swd::cuda
