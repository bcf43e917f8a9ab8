// The swd_native ops on CPU tensors (arguments in the order of the schemas in
// swd_kernels/ops.py). They check their inputs, read the step-wide scalars on the host and
// run the kernels of kernels.h; csrc/ops.cpp registers them.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace swd::cpu {

using OptionalTensor = std::optional<at::Tensor>;

void adam_reduce(at::TensorList grads, at::TensorList exp_avg_sqs,
                 at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
                 at::TensorList v_sums, const at::Tensor& accum, double beta2, bool amsgrad,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf);

void adam_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
                 double weight_decay, double eps, double decay_power, double decay_eps,
                 bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
                 const OptionalTensor& found_inf);

void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
               at::TensorList state_steps, at::TensorList v_sums, const at::Tensor& accum,
               const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
               double weight_decay, double eps, double decay_power, double decay_eps,
               bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
               const OptionalTensor& found_inf);

void adai_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList beta1_prods,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta0, double beta2,
                 double weight_decay, double eps, bool maximize,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf);

void sgd_update(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                at::TensorList state_steps, const OptionalTensor& lr_tensor, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov,
                bool maximize, const OptionalTensor& grad_scale,
                const OptionalTensor& found_inf);

}  // namespace swd::cpu
