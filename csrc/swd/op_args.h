// The arguments of each swd_native op, by name, as the schemas in swd_kernels/ops.py order
// them. swd/op_signatures.inc unpacks the registered C++ signatures into these, so each device
// implements an op as one function of one struct, and the checks (swd/op_checks.h) are shared.
// Members refer to the caller's arguments: valid for the duration of the op call.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace swd {

using OptionalTensor = std::optional<at::Tensor>;

struct AdamReduceArgs {
  at::TensorList grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums;
  const at::Tensor& accum;
  double beta2;
  bool amsgrad;
  const OptionalTensor& grad_scale;
  const OptionalTensor& found_inf;
};

struct AdamUpdateArgs {
  at::TensorList params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums;
  const at::Tensor& accum;
  const OptionalTensor& lr_tensor;
  double lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps;
  bool amsgrad, maximize;
  const OptionalTensor& grad_scale;
  const OptionalTensor& found_inf;
};

// adam_step: adam_update's arguments (the same schema), and the reduction's part of them.
struct AdamStepArgs {
  AdamUpdateArgs update;

  AdamReduceArgs reduce() const {
    return {update.grads,        update.exp_avg_sqs, update.max_exp_avg_sqs, update.state_steps,
            update.v_sums,       update.accum,       update.beta2,           update.amsgrad,
            update.grad_scale,   update.found_inf};
  }
};

struct AdaiUpdateArgs {
  at::TensorList params, grads, exp_avgs, exp_avg_sqs, beta1_prods, state_steps, v_sums;
  const at::Tensor& accum;
  const OptionalTensor& lr_tensor;
  double lr, beta0, beta2, weight_decay, eps;
  bool maximize;
  const OptionalTensor& grad_scale;
  const OptionalTensor& found_inf;
};

struct SgdUpdateArgs {
  at::TensorList params, grads, momentum_buffers, state_steps;
  const OptionalTensor& lr_tensor;
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  const OptionalTensor& grad_scale;
  const OptionalTensor& found_inf;
};

}  // namespace swd
