// swd_native::adam_update on CUDA: pass 2 of AdamS / AMSGradS (v_bar read from accum on the
// device).
#include <c10/cuda/CUDAGuard.h>

#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void adam_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
                 double weight_decay, double eps, double decay_power, double decay_eps,
                 bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
                 const OptionalTensor& found_inf) {
  const char* op = "swd_native::adam_update (CUDA)";
  if (params.empty()) return;
  const at::Device device = cuda_device_of(params, op, "params");
  const c10::cuda::CUDAGuard guard(device);
  std::vector<NamedList> states = {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}};
  if (amsgrad) states.push_back({max_exp_avg_sqs, "max_exp_avg_sqs"});
  const at::ScalarType state_dtype =
      check_bucket(op, {params, "params"}, {{grads, "grads"}}, states, state_steps);
  check_accum(accum, device, op);
  const at::Tensor lr_value = device_lr(lr_tensor, device, op);
  const at::Tensor scale = device_scalar(grad_scale, at::kFloat, device, op, "grad_scale");
  const at::Tensor inf = device_scalar(found_inf, at::kFloat, device, op, "found_inf");

  std::vector<at::TensorList> lists = {params, grads, exp_avgs, exp_avg_sqs};
  if (amsgrad) lists.push_back(max_exp_avg_sqs);
  const BucketPlan plan = plan_bucket(lists, state_steps, {});
  const StepInputs inputs{lr_f32(lr_value), lr_f64(lr_value), lr, accum.const_data_ptr<double>(),
                          pointer_or_null<float>(inf)};
  const AmpInputs amp{pointer_or_null<float>(scale), pointer_or_null<float>(inf)};
  const UpdateFlags flags{maximize, false};
  dispatch_dtypes(params[0].scalar_type(), state_dtype, op, [&](auto param_tag, auto state_tag) {
    using P = typename decltype(param_tag)::type;
    using S = typename decltype(state_tag)::type;
    if (amsgrad) {
      const AdamRule<true>::Hyper h{beta1, beta2, weight_decay, eps, decay_power, decay_eps};
      launch_update<AdamRule<true>, P, S>(plan, h, inputs, amp, flags, accum.options());
    } else {
      const AdamRule<false>::Hyper h{beta1, beta2, weight_decay, eps, decay_power, decay_eps};
      launch_update<AdamRule<false>, P, S>(plan, h, inputs, amp, flags, accum.options());
    }
  });
}

}  // namespace swd::cuda
