// swd_native::adai_update on CUDA: the AdaiS update (its reduction is adam_reduce).
#include <c10/cuda/CUDAGuard.h>

#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void adai_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList beta1_prods,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta0, double beta2,
                 double weight_decay, double eps, bool maximize,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf) {
  const char* op = "swd_native::adai_update (CUDA)";
  if (params.empty()) return;
  const at::Device device = cuda_device_of(params, op, "params");
  const c10::cuda::CUDAGuard guard(device);
  const at::ScalarType state_dtype = check_bucket(
      op, {params, "params"}, {{grads, "grads"}},
      {{exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}, {beta1_prods, "beta1_prods"}},
      state_steps);
  check_accum(accum, device, op);
  const at::Tensor lr_value = device_lr(lr_tensor, device, op);
  const at::Tensor scale = device_scalar(grad_scale, at::kFloat, device, op, "grad_scale");
  const at::Tensor inf = device_scalar(found_inf, at::kFloat, device, op, "found_inf");

  const BucketPlan plan =
      plan_bucket({params, grads, exp_avgs, exp_avg_sqs, beta1_prods}, state_steps, {});
  const StepInputs inputs{lr_f32(lr_value), lr_f64(lr_value), lr, accum.const_data_ptr<double>(),
                          pointer_or_null<float>(inf)};
  const AmpInputs amp{pointer_or_null<float>(scale), pointer_or_null<float>(inf)};
  const AdaiRule::Hyper hyper{beta0, beta2, weight_decay, eps};
  dispatch_dtypes(params[0].scalar_type(), state_dtype, op, [&](auto param_tag, auto state_tag) {
    using P = typename decltype(param_tag)::type;
    using S = typename decltype(state_tag)::type;
    launch_update<AdaiRule, P, S>(plan, hyper, inputs, amp, UpdateFlags{maximize, false},
                                  accum.options());
  });
}

}  // namespace swd::cuda
