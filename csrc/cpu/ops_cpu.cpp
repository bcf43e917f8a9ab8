// The swd_native ops on CPU: input checks, host-side step-wide scalars, kernel launch.
#include "cpu/ops_cpu.h"

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "cpu/kernels.h"
#include "swd/rules.h"

namespace swd::cpu {
namespace {

// ---------------------------------------------------------------- input checks ----------

Dtype storage_dtype(const char* op, const char* name, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return Dtype::kFloat;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kHalf: return Dtype::kHalf;
    default: break;
  }
  TORCH_CHECK(false, "swd_native::", op, ": ", name, " have dtype ", dtype,
              "; the native CPU kernels take float32, bfloat16 or float16 (use "
              "backend='torch' for other dtypes)");
}

// Equal strides on every dimension longer than 1 (the optimizer's same_layout).
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_cpu(const char* op, const char* name, int64_t i, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "swd_native::", op, ": ", name, "[", i, "] is on ",
              t.device(), " but this is the CPU kernel: all tensors of one call must be on "
              "one device");
}

// The reference list (params, or grads for the reduction): CPU, dense, one dtype.
Dtype check_reference(const char* op, const char* name, at::TensorList ref) {
  const Dtype dtype = storage_dtype(op, name, ref[0].scalar_type());
  for (size_t i = 0; i < ref.size(); ++i) {
    check_cpu(op, name, i, ref[i]);
    TORCH_CHECK(ref[i].scalar_type() == ref[0].scalar_type(), "swd_native::", op, ": ", name,
                "[", i, "] has dtype ", ref[i].scalar_type(), " but ", name, "[0] has ",
                ref[0].scalar_type(), "; one call takes one dtype (bucket by dtype)");
    TORCH_CHECK(ref[i].is_non_overlapping_and_dense(), "swd_native::", op, ": ", name, "[",
                i, "] is not dense (a view with gaps or overlaps); pass a contiguous copy");
  }
  return dtype;
}

// `list` holds one tensor per reference tensor with its shape, layout and device, all of
// one dtype (returned).
Dtype check_like(const char* op, const char* name, at::TensorList list, const char* ref_name,
                 at::TensorList ref) {
  TORCH_CHECK(list.size() == ref.size(), "swd_native::", op, ": ", name, " has ",
              list.size(), " tensors but ", ref_name, " has ", ref.size(),
              "; pass one per parameter");
  if (list.empty()) return Dtype::kFloat;
  const Dtype dtype = storage_dtype(op, name, list[0].scalar_type());
  for (size_t i = 0; i < list.size(); ++i) {
    check_cpu(op, name, i, list[i]);
    TORCH_CHECK(list[i].scalar_type() == list[0].scalar_type(), "swd_native::", op, ": ",
                name, "[", i, "] has dtype ", list[i].scalar_type(), " but ", name,
                "[0] has ", list[0].scalar_type(), "; one call takes one dtype per list");
    TORCH_CHECK(list[i].sizes() == ref[i].sizes(), "swd_native::", op, ": ", name, "[", i,
                "] has shape ", list[i].sizes(), " but ", ref_name, "[", i, "] has ",
                ref[i].sizes(), "; they must match");
    TORCH_CHECK(same_layout(list[i], ref[i]), "swd_native::", op, ": ", name, "[", i,
                "] has strides ", list[i].strides(), " but ", ref_name, "[", i, "] has ",
                ref[i].strides(), "; give them one memory layout (e.g. empty_like(param))");
  }
  return dtype;
}

// One 0-dim float32 step per tensor, read on the host.
std::vector<float> read_steps(const char* op, at::TensorList steps, size_t count) {
  TORCH_CHECK(steps.size() == count, "swd_native::", op, ": state_steps has ", steps.size(),
              " tensors but there are ", count, " parameters; pass one step per parameter");
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    check_cpu(op, "state_steps", i, steps[i]);
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].scalar_type() == at::kFloat,
                "swd_native::", op, ": state_steps[", i, "] must be a one-element float32 "
                "tensor, got shape ", steps[i].sizes(), " and dtype ", steps[i].scalar_type());
    values[i] = *steps[i].const_data_ptr<float>();
  }
  return values;
}

void write_steps(at::TensorList steps, const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i) *steps[i].mutable_data_ptr<float>() = values[i];
}

// A one-element optional argument (lr_tensor, grad_scale, found_inf) read on the host.
double read_scalar(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.numel() == 1, "swd_native::", op, ": ", name,
              " must have one element, got shape ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "swd_native::", op, ": ", name, " is on ", t.device(),
              " but the tensors are on cpu; all tensors of one call must be on one device");
  return t.item<double>();
}

bool skip_step(const char* op, const OptionalTensor& found_inf) {
  return found_inf.has_value() && read_scalar(op, "found_inf", *found_inf) != 0.0;
}

GradOptions grad_options(const char* op, const OptionalTensor& grad_scale, bool maximize) {
  GradOptions o;
  o.maximize = maximize;
  if (grad_scale.has_value()) {
    o.scaled = true;
    o.grad_scale = static_cast<float>(read_scalar(op, "grad_scale", *grad_scale));
  }
  return o;
}

double learning_rate(const char* op, const OptionalTensor& lr_tensor, double lr) {
  return lr_tensor.has_value() ? read_scalar(op, "lr_tensor", *lr_tensor) : lr;
}

void check_accum(const char* op, const at::Tensor& accum) {
  TORCH_CHECK(accum.device().is_cpu() && accum.scalar_type() == at::kDouble &&
                  accum.numel() == 2 && accum.is_contiguous(),
              "swd_native::", op, ": accum must be a contiguous float64 tensor [sum, count] "
              "on cpu, got dtype ", accum.scalar_type(), ", shape ", accum.sizes(),
              " on ", accum.device());
}

// v_bar = accum[0] / accum[1] (0 when nothing was counted).
double read_global_mean(const char* op, const at::Tensor& accum) {
  check_accum(op, accum);
  const double* a = accum.const_data_ptr<double>();
  return swd::global_mean(a[0], a[1]);
}

}  // namespace

// ---------------------------------------------------------------- the ops ---------------

void adam_reduce(at::TensorList grads, at::TensorList exp_avg_sqs,
                 at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
                 at::TensorList v_sums, const at::Tensor& accum, double beta2, bool amsgrad,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf) {
  constexpr const char* op = "adam_reduce";
  if (grads.empty()) return;
  check_accum(op, accum);
  AdamReduce a{};
  a.param_dtype = check_reference(op, "grads", grads);
  const std::vector<float> steps = read_steps(op, state_steps, grads.size());
  if (amsgrad) {
    a.state_dtype = check_like(op, "exp_avg_sqs", exp_avg_sqs, "grads", grads);
    const Dtype max_dtype = check_like(op, "max_exp_avg_sqs", max_exp_avg_sqs, "grads", grads);
    TORCH_CHECK(max_dtype == a.state_dtype, "swd_native::", op, ": max_exp_avg_sqs and "
                "exp_avg_sqs must share one dtype");
  } else {
    a.state_dtype = Dtype::kFloat;  // no state is read
    TORCH_CHECK(v_sums.size() == grads.size(), "swd_native::", op, ": v_sums has ",
                v_sums.size(), " tensors but grads has ", grads.size(),
                "; pass one running sum per parameter");
    for (size_t i = 0; i < v_sums.size(); ++i) {
      check_cpu(op, "v_sums", i, v_sums[i]);
      TORCH_CHECK(v_sums[i].numel() == 1 && v_sums[i].scalar_type() == at::kDouble,
                  "swd_native::", op, ": v_sums[", i, "] must be a one-element float64 "
                  "tensor, got shape ", v_sums[i].sizes(), " and dtype ",
                  v_sums[i].scalar_type());
    }
  }
  a.amsgrad = amsgrad;
  a.beta2 = static_cast<float>(beta2);
  a.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  a.grad = grad_options(op, grad_scale, /*maximize=*/false);
  const bool skip = skip_step(op, found_inf);

  std::vector<ReduceTensor> tensors(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    tensors[i] = {grads[i].const_data_ptr(),
                  amsgrad ? exp_avg_sqs[i].const_data_ptr() : nullptr,
                  amsgrad ? max_exp_avg_sqs[i].const_data_ptr() : nullptr, grads[i].numel()};
  }
  a.tensors = tensors.data();
  a.count = static_cast<int64_t>(tensors.size());
  std::vector<double> sums(tensors.size());
  best_kernels().adam_reduce(a, sums.data());

  // grads were summed unscaled: sum((g / s)^2) = sum(g^2) / s^2, in double
  const double scale = grad_scale.has_value() ? read_scalar(op, "grad_scale", *grad_scale) : 1;
  double total = 0.0, count = 0.0;
  for (size_t i = 0; i < sums.size(); ++i) {
    double sum_v = sums[i];
    if (!amsgrad) {  // the linear identity: the new sum of exp_avg_sq
      double* v_sum = v_sums[i].mutable_data_ptr<double>();
      sum_v = beta2 * *v_sum + (1.0 - beta2) * (sums[i] / (scale * scale));
      if (!skip) *v_sum = sum_v;
    }
    total += sum_v / swd::one_minus_pow(beta2, steps[i] + 1.0);
    count += static_cast<double>(tensors[i].numel);
  }
  double* acc = accum.mutable_data_ptr<double>();
  acc[0] += total;
  acc[1] += count;
}

void adam_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
                 double weight_decay, double eps, double decay_power, double decay_eps,
                 bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
                 const OptionalTensor& found_inf) {
  constexpr const char* op = "adam_update";
  if (params.empty()) return;
  AdamUpdate a{};
  a.param_dtype = check_reference(op, "params", params);
  TORCH_CHECK(check_like(op, "grads", grads, "params", params) == a.param_dtype,
              "swd_native::", op, ": grads must have the dtype of params");
  a.state_dtype = check_like(op, "exp_avgs", exp_avgs, "params", params);
  TORCH_CHECK(check_like(op, "exp_avg_sqs", exp_avg_sqs, "params", params) == a.state_dtype,
              "swd_native::", op, ": exp_avg_sqs must have the dtype of exp_avgs");
  if (amsgrad) {
    TORCH_CHECK(check_like(op, "max_exp_avg_sqs", max_exp_avg_sqs, "params", params) ==
                    a.state_dtype,
                "swd_native::", op, ": max_exp_avg_sqs must have the dtype of exp_avgs");
  }
  std::vector<float> steps = read_steps(op, state_steps, params.size());
  const double v_bar = read_global_mean(op, accum);
  a.amsgrad = amsgrad;
  a.grad = grad_options(op, grad_scale, maximize);
  const double lr_value = learning_rate(op, lr_tensor, lr);
  if (skip_step(op, found_inf)) return;

  const double decay_scale = swd::decay_scale(v_bar, decay_power, decay_eps);
  std::vector<AdamTensor> tensors(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    steps[i] += 1.0f;
    tensors[i] = {params[i].mutable_data_ptr(), grads[i].const_data_ptr(),
                  exp_avgs[i].mutable_data_ptr(), exp_avg_sqs[i].mutable_data_ptr(),
                  amsgrad ? max_exp_avg_sqs[i].mutable_data_ptr() : nullptr,
                  params[i].numel(),
                  swd::adam_scalars(lr_value, beta1, beta2, weight_decay, eps, steps[i],
                                    decay_scale)};
  }
  a.tensors = tensors.data();
  a.count = static_cast<int64_t>(tensors.size());
  best_kernels().adam_update(a);
  write_steps(state_steps, steps);
}

void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
               at::TensorList state_steps, at::TensorList v_sums, const at::Tensor& accum,
               const OptionalTensor& lr_tensor, double lr, double beta1, double beta2,
               double weight_decay, double eps, double decay_power, double decay_eps,
               bool amsgrad, bool maximize, const OptionalTensor& grad_scale,
               const OptionalTensor& found_inf) {
  // One call from Python for the whole step (the bucket is the step's only one).
  adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2, amsgrad,
              grad_scale, found_inf);
  adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, accum,
              lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps, amsgrad,
              maximize, grad_scale, found_inf);
}

void adai_update(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList beta1_prods,
                 at::TensorList state_steps, const at::Tensor& accum,
                 const OptionalTensor& lr_tensor, double lr, double beta0, double beta2,
                 double weight_decay, double eps, bool maximize,
                 const OptionalTensor& grad_scale, const OptionalTensor& found_inf) {
  constexpr const char* op = "adai_update";
  if (params.empty()) return;
  AdaiUpdate a{};
  a.param_dtype = check_reference(op, "params", params);
  TORCH_CHECK(check_like(op, "grads", grads, "params", params) == a.param_dtype,
              "swd_native::", op, ": grads must have the dtype of params");
  a.state_dtype = check_like(op, "exp_avgs", exp_avgs, "params", params);
  TORCH_CHECK(check_like(op, "exp_avg_sqs", exp_avg_sqs, "params", params) == a.state_dtype &&
                  check_like(op, "beta1_prods", beta1_prods, "params", params) ==
                      a.state_dtype,
              "swd_native::", op, ": exp_avg_sqs and beta1_prods must have the dtype of "
              "exp_avgs");
  std::vector<float> steps = read_steps(op, state_steps, params.size());
  const double v_bar = read_global_mean(op, accum);
  a.grad = grad_options(op, grad_scale, maximize);
  const double lr_value = learning_rate(op, lr_tensor, lr);
  if (skip_step(op, found_inf)) return;

  std::vector<AdaiTensor> tensors(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    steps[i] += 1.0f;
    tensors[i] = {params[i].mutable_data_ptr(), grads[i].const_data_ptr(),
                  exp_avgs[i].mutable_data_ptr(), exp_avg_sqs[i].mutable_data_ptr(),
                  beta1_prods[i].mutable_data_ptr(), params[i].numel(),
                  swd::adai_scalars(lr_value, beta0, beta2, weight_decay, eps, steps[i],
                                    v_bar)};
  }
  a.tensors = tensors.data();
  a.count = static_cast<int64_t>(tensors.size());
  best_kernels().adai_update(a);
  write_steps(state_steps, steps);
}

void sgd_update(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                at::TensorList state_steps, const OptionalTensor& lr_tensor, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov,
                bool maximize, const OptionalTensor& grad_scale,
                const OptionalTensor& found_inf) {
  constexpr const char* op = "sgd_update";
  if (params.empty()) return;
  SgdUpdate a{};
  a.param_dtype = check_reference(op, "params", params);
  TORCH_CHECK(check_like(op, "grads", grads, "params", params) == a.param_dtype,
              "swd_native::", op, ": grads must have the dtype of params");
  const bool has_momentum = momentum != 0.0;
  a.state_dtype = has_momentum
                      ? check_like(op, "momentum_buffers", momentum_buffers, "params", params)
                      : a.param_dtype;
  std::vector<float> steps = read_steps(op, state_steps, params.size());
  a.nesterov = nesterov;
  a.grad = grad_options(op, grad_scale, maximize);
  const double lr_value = learning_rate(op, lr_tensor, lr);
  if (skip_step(op, found_inf)) return;

  std::vector<SgdTensor> tensors(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    tensors[i] = {params[i].mutable_data_ptr(), grads[i].const_data_ptr(),
                  has_momentum ? momentum_buffers[i].mutable_data_ptr() : nullptr,
                  params[i].numel(),
                  swd::sgd_scalars(lr_value, momentum, dampening, weight_decay, steps[i])};
    steps[i] += 1.0f;
  }
  a.tensors = tensors.data();
  a.count = static_cast<int64_t>(tensors.size());
  best_kernels().sgd_update(a);
  write_steps(state_steps, steps);
}

}  // namespace swd::cpu
