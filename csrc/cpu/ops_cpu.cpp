// The swd_native ops on CPU: the shared argument checks (swd/op_checks.h); the step-wide
// values (lr, grad_scale, found_inf, v_bar, step counts) read on the host and the per-tensor
// scalars formed there (swd/rules.h); then the kernels of kernels.h.
#include "cpu/ops_cpu.h"

#include <initializer_list>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "cpu/kernels.h"
#include "swd/op_checks.h"
#include "swd/rules.h"
#include "swd/step_scalars.h"

namespace swd::cpu {
namespace {

template <typename Args>
Bucket check(const Args& args, const char* op) {
  return check_op<CpuDtypePairs>(args, at::kCPU, op);
}

// The one-element optional arguments, read on the host (checked to be on the CPU).
struct HostInputs {
  double lr;
  double grad_scale;  // 1 when not given
  GradOptions grad;
  bool skip;          // found_inf is nonzero: change nothing but accum
};

HostInputs read_inputs(const OptionalTensor& lr_tensor, double lr,
                       const OptionalTensor& grad_scale, const OptionalTensor& found_inf,
                       bool maximize) {
  auto given = [](const OptionalTensor& x) { return x.has_value() && x->defined(); };
  HostInputs in;
  in.lr = given(lr_tensor) ? lr_tensor->item<double>() : lr;
  in.grad_scale = given(grad_scale) ? grad_scale->item<double>() : 1.0;
  in.grad = {given(grad_scale), static_cast<float>(in.grad_scale), maximize};
  in.skip = given(found_inf) && found_inf->item<double>() != 0.0;
  return in;
}

std::vector<float> read_steps(at::TensorList steps) {
  std::vector<float> values(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) values[i] = *steps[i].const_data_ptr<float>();
  return values;
}

void write_steps(at::TensorList steps, const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i) *steps[i].mutable_data_ptr<float>() = values[i];
}

double read_global_mean(const at::Tensor& accum) {
  const double* a = accum.const_data_ptr<double>();
  return global_mean(a[kVhatSum], a[kCount]);
}

// Pass 1 of a checked bucket: each tensor's sums from the kernel, then in double, in tensor
// order, its sum of g^2, its new v_sum (non-amsgrad), its share of sum(v_hat) and its clip
// term (non-amsgrad), added to accum (swd/step_scalars.h).
void reduce_bucket(const AdamReduceArgs& a, const Bucket& b) {
  const HostInputs in = read_inputs({}, 0.0, a.grad_scale, a.found_inf, false);
  const std::vector<float> steps = read_steps(a.state_steps);
  std::vector<ReduceTensor> tensors(a.grads.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    tensors[i] = {a.grads[i].const_data_ptr(),
                  a.amsgrad ? a.exp_avg_sqs[i].const_data_ptr() : nullptr,
                  a.amsgrad ? a.max_exp_avg_sqs[i].const_data_ptr() : nullptr,
                  a.grads[i].numel()};
  }
  const ReduceCall call{b.param_dtype, b.state_dtype, tensors.data(),
                        static_cast<int64_t>(tensors.size()), a.amsgrad,
                        second_moment_coefficients(a.beta2), in.grad};
  std::vector<double> grad_sq_sums(tensors.size());
  std::vector<double> vmax_sums(a.amsgrad ? tensors.size() : 0);
  best_kernels().adam_reduce(call, grad_sq_sums.data(), vmax_sums.data());

  // the kernel summed grads unscaled: sum((g / s)^2) = sum(g^2) / s^2, in double
  const double scale_squared = in.grad_scale * in.grad_scale;
  double v_hat = 0.0, count = 0.0, grad_sq = 0.0, clip = 0.0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const double sum_g2 = grad_sq_sums[i] / scale_squared;
    double v_sum;
    if (a.amsgrad) {
      v_sum = vmax_sums[i];
    } else {
      double* stored = a.v_sums[i].mutable_data_ptr<double>();
      v_sum = updated_v_sum(*stored, sum_g2, a.beta2);
      if (!in.skip) *stored = v_sum;
      clip += clip_term(sum_g2, a.beta2, steps[i]);
    }
    v_hat += v_hat_sum(v_sum, a.beta2, steps[i]);
    count += static_cast<double>(tensors[i].numel);
    grad_sq += sum_g2;
  }
  double* accum = a.accum.mutable_data_ptr<double>();
  accum[kVhatSum] += v_hat;
  accum[kCount] += count;
  accum[kGradSqSum] += grad_sq;
  if (!a.amsgrad) accum[kClipTerm] += clip;
}

// Pass 2 of a checked bucket with `Rule`: each tensor's scalars from its step count, the
// kernel, the step counts advanced; with 16-bit state, v_sums set to the sums of the stored
// state (swd/op_checks.h update_writes_v_sums). `states` are the rule's state lists, in its
// order.
template <typename Rule>
void update_bucket(const Bucket& b, at::TensorList params, at::TensorList grads,
                   std::initializer_list<at::TensorList> states, at::TensorList state_steps,
                   at::TensorList v_sums, const typename Rule::Hyper& hyper,
                   const HostInputs& in, double v_bar) {
  TORCH_INTERNAL_ASSERT(states.size() == static_cast<size_t>(Rule::kStates));
  if (in.skip) return;
  std::vector<float> steps = read_steps(state_steps);
  std::vector<UpdateTensor<Rule>> tensors(params.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    UpdateTensor<Rule>& t = tensors[i];
    t.param = params[i].mutable_data_ptr();
    t.grad = grads[i].const_data_ptr();
    t.states[0] = nullptr;  // a rule without state still has a slot
    int k = 0;
    for (at::TensorList list : states) t.states[k++] = list[i].mutable_data_ptr();
    t.numel = params[i].numel();
    t.scalars = Rule::scalars(hyper, in.lr, v_bar, steps[i]);
    steps[i] += 1.0f;
  }
  // (a rule without a summed state is AMSGradS's or SGDS's)
  const bool sums = Rule::kSummedState >= 0 && update_writes_v_sums(b.state_dtype, false);
  std::vector<double> stored_sums(sums ? tensors.size() : 0);
  best_kernels().update.run(UpdateCall<Rule>{b.param_dtype, b.state_dtype, tensors.data(),
                                             static_cast<int64_t>(tensors.size()), in.grad,
                                             sums ? stored_sums.data() : nullptr});
  write_steps(state_steps, steps);
  for (size_t i = 0; i < stored_sums.size(); ++i) {
    *v_sums[i].mutable_data_ptr<double>() = stored_sums[i];
  }
}

void adam_update_bucket(const AdamUpdateArgs& a, const Bucket& b) {
  const HostInputs in = read_inputs(a.lr_tensor, a.lr, a.grad_scale, a.found_inf, a.maximize);
  const AdamHyper hyper{a.beta1, a.beta2, a.weight_decay, a.eps, a.decay_power, a.decay_eps};
  const double v_bar = read_global_mean(a.accum);
  if (a.amsgrad) {
    update_bucket<AdamRule<true>>(b, a.params, a.grads,
                                  {a.exp_avgs, a.exp_avg_sqs, a.max_exp_avg_sqs},
                                  a.state_steps, a.v_sums, hyper, in, v_bar);
  } else {
    update_bucket<AdamRule<false>>(b, a.params, a.grads, {a.exp_avgs, a.exp_avg_sqs},
                                   a.state_steps, a.v_sums, hyper, in, v_bar);
  }
}

}  // namespace

void adam_reduce(const AdamReduceArgs& args) {
  if (args.grads.empty()) return;
  reduce_bucket(args, check(args, "swd_native::adam_reduce (CPU)"));
}

void adam_update(const AdamUpdateArgs& args) {
  if (args.params.empty()) return;
  adam_update_bucket(args, check(args, "swd_native::adam_update (CPU)"));
}

void adam_step(const AdamStepArgs& args) {
  // One call from Python for the whole step (the bucket is the step's only one); both
  // passes are checked before either runs.
  if (args.update.params.empty()) return;
  const Bucket bucket = check(args, "swd_native::adam_step (CPU)");
  reduce_bucket(args.reduce(), bucket);
  adam_update_bucket(args.update, bucket);
}

void adai_update(const AdaiUpdateArgs& a) {
  if (a.params.empty()) return;
  const Bucket b = check(a, "swd_native::adai_update (CPU)");
  const HostInputs in = read_inputs(a.lr_tensor, a.lr, a.grad_scale, a.found_inf, a.maximize);
  update_bucket<AdaiRule>(b, a.params, a.grads, {a.exp_avgs, a.exp_avg_sqs, a.beta1_prods},
                          a.state_steps, a.v_sums, {a.beta0, a.beta2, a.weight_decay, a.eps},
                          in, read_global_mean(a.accum));
}

void sgd_update(const SgdUpdateArgs& a) {
  if (a.params.empty()) return;
  const Bucket b = check(a, "swd_native::sgd_update (CPU)");
  const HostInputs in = read_inputs(a.lr_tensor, a.lr, a.grad_scale, a.found_inf, a.maximize);
  const SgdHyper hyper{a.momentum, a.dampening, a.weight_decay, a.nesterov};
  if (a.momentum != 0.0) {
    update_bucket<SgdRule<true>>(b, a.params, a.grads, {a.momentum_buffers}, a.state_steps,
                                 {}, hyper, in, 0.0);
  } else {
    update_bucket<SgdRule<false>>(b, a.params, a.grads, {}, a.state_steps, {}, hyper, in, 0.0);
  }
}

}  // namespace swd::cpu
