// swd_native::sgd_update on CUDA: the SGDS update (no reduction; no buffer without momentum).
#include <c10/cuda/CUDAGuard.h>

#include "cuda/host_checks.cuh"
#include "cuda/ops_cuda.cuh"
#include "cuda/update_launch.cuh"

namespace swd::cuda {

void sgd_update(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                at::TensorList state_steps, const OptionalTensor& lr_tensor, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov,
                bool maximize, const OptionalTensor& grad_scale,
                const OptionalTensor& found_inf) {
  const char* op = "swd_native::sgd_update (CUDA)";
  if (params.empty()) return;
  const at::Device device = cuda_device_of(params, op, "params");
  const c10::cuda::CUDAGuard guard(device);
  const bool with_momentum = momentum != 0.0;
  std::vector<NamedList> states;
  if (with_momentum) states.push_back({momentum_buffers, "momentum_buffers"});
  const at::ScalarType state_dtype =
      check_bucket(op, {params, "params"}, {{grads, "grads"}}, states, state_steps);
  const at::Tensor lr_value = device_lr(lr_tensor, device, op);
  const at::Tensor scale = device_scalar(grad_scale, at::kFloat, device, op, "grad_scale");
  const at::Tensor inf = device_scalar(found_inf, at::kFloat, device, op, "found_inf");

  std::vector<at::TensorList> lists = {params, grads};
  if (with_momentum) lists.push_back(momentum_buffers);
  const BucketPlan plan = plan_bucket(lists, state_steps, {});
  const StepInputs inputs{lr_f32(lr_value), lr_f64(lr_value), lr, nullptr,
                          pointer_or_null<float>(inf)};
  const AmpInputs amp{pointer_or_null<float>(scale), pointer_or_null<float>(inf)};
  const UpdateFlags flags{maximize, nesterov};
  const at::TensorOptions options = params[0].options();
  if (with_momentum) {
    const SgdRule<true>::Hyper hyper{momentum, dampening, weight_decay};
    dispatch_dtypes(params[0].scalar_type(), state_dtype, op, [&](auto param_tag, auto state_tag) {
      using P = typename decltype(param_tag)::type;
      using S = typename decltype(state_tag)::type;
      launch_update<SgdRule<true>, P, S>(plan, hyper, inputs, amp, flags, options);
    });
  } else {
    const SgdRule<false>::Hyper hyper{momentum, dampening, weight_decay};
    dispatch_param_dtype(params[0].scalar_type(), op, [&](auto param_tag) {
      using P = typename decltype(param_tag)::type;
      launch_update<SgdRule<false>, P, P>(plan, hyper, inputs, amp, flags, options);
    });
  }
}

}  // namespace swd::cuda
