// The argument checks of the op contract (docs/design.md §4), one copy for every device's
// entry points (cpu/ops_cpu.cpp, cuda/*.cu): list lengths, device, dtypes, shapes, layouts,
// density, the 0-dim step and sum lists, accum and the one-value optional arguments. They read
// tensor metadata only, so a bad call fails before anything is written or launched and a
// good one never synchronises. `Pairs` (swd/dtype_dispatch.h) says which storage dtypes the
// device's kernels take; `op` names the op and device in messages.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "swd/dtype_dispatch.h"
#include "swd/op_args.h"
#include "swd/step_scalars.h"

namespace swd {

struct NamedList {
  at::TensorList list;
  const char* name;
};

// What the checks establish about a call's bucket.
struct Bucket {
  at::Device device;
  at::ScalarType param_dtype, state_dtype;
};

inline void check_count(at::TensorList list, size_t n, const char* op, const char* name,
                        const char* ref_name) {
  TORCH_CHECK(list.size() == n, op, ": ", name, " has ", list.size(), " tensors but ",
              ref_name, " has ", n, "; pass one per parameter");
}

// The device of a call: that of ref[0], which must be of `type`. (On CUDA this runs before
// the device guard is set, which would otherwise fail with a message naming no argument.)
inline at::Device device_of(NamedList ref, at::DeviceType type, const char* op) {
  const at::Device device = ref.list[0].device();
  TORCH_CHECK(device.type() == type, op, ": ", ref.name, "[0] is on ", device, ", expected a ",
              c10::DeviceTypeName(type), " tensor; all tensors of one call must be on one "
              "device");
  return device;
}

// Entry i of list `name` must lie on the device of `ref` (entry i of `ref_name`) in `dtype`,
// with its shape and, on every dimension longer than 1, its strides, and be dense: kernels
// walk them as flat arrays in the same order.
inline void check_like(const at::Tensor& ref, const at::Tensor& t, at::ScalarType dtype,
                       const char* op, const char* name, const char* ref_name, size_t i) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, "[", i, "] is on ", t.device(),
              " but ", ref_name, "[", i, "] is on ", ref.device(), "; one call takes one "
              "device");
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, "[", i, "] has dtype ",
              t.scalar_type(), ", expected ", dtype, "; one call takes one dtype per list "
              "(bucket by dtype)");
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, "[", i, "] has shape ", t.sizes(),
              " but ", ref_name, "[", i, "] has shape ", ref.sizes(), "; they must match");
  for (int64_t d = 0; d < t.dim(); ++d) {
    TORCH_CHECK(t.size(d) <= 1 || t.stride(d) == ref.stride(d), op, ": ", name, "[", i,
                "] has strides ", t.strides(), " but ", ref_name, "[", i, "] has ",
                ref.strides(), "; give them one memory layout (e.g. empty_like(param))");
  }
  TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", name, "[", i,
              "] is not dense (a view with gaps or overlaps); pass a contiguous copy");
}

// One one-element tensor of `dtype` on `device` per parameter (state_steps, v_sums).
inline void check_scalar_list(at::TensorList list, size_t n, at::ScalarType dtype,
                              const at::Device& device, const char* op, const char* name) {
  TORCH_CHECK(list.size() == n, op, ": ", name, " has ", list.size(), " tensors but there are ",
              n, " parameters; pass one per parameter");
  for (size_t i = 0; i < list.size(); ++i) {
    const at::Tensor& t = list[i];
    TORCH_CHECK(t.numel() == 1 && t.scalar_type() == dtype && t.device() == device, op, ": ",
                name, "[", i, "] must be a one-element ", dtype, " tensor on ", device,
                ", got ", t.scalar_type(), " of shape ", t.sizes(), " on ", t.device());
  }
}

inline void check_accum(const at::Tensor& accum, const at::Device& device, const char* op) {
  TORCH_CHECK(accum.scalar_type() == at::kDouble && accum.numel() == kAccumSize &&
                  accum.is_contiguous() && accum.device() == device,
              op, ": accum must be a contiguous float64 tensor of ", kAccumSize,
              " elements [sum of v_hat, count, sum of g^2, clip term] on ", device, ", got ",
              accum.scalar_type(), " of shape ", accum.sizes(), " on ", accum.device());
}

// Whether an update op sets v_sums to the sums of the exp_avg_sq it stores: with
// half-precision state and without amsgrad (swd_kernels/ops.py).
inline bool update_writes_v_sums(at::ScalarType state_dtype, bool amsgrad) {
  return !amsgrad && (state_dtype == at::kBFloat16 || state_dtype == at::kHalf);
}

// One float64 running sum per parameter.
inline void check_v_sums(at::TensorList v_sums, size_t n, const Bucket& b, const char* op) {
  check_scalar_list(v_sums, n, at::kDouble, b.device, op, "v_sums");
}

// An optional one-value argument (lr_tensor, grad_scale, found_inf), when given.
inline void check_optional_scalar(const OptionalTensor& x, const at::Device& device,
                                  const char* op, const char* name) {
  if (!x.has_value() || !x->defined()) return;
  TORCH_CHECK(x->numel() == 1, op, ": ", name, " must hold exactly one value, got shape ",
              x->sizes());
  TORCH_CHECK(x->device() == device, op, ": ", name, " is on ", x->device(),
              " but the tensors are on ", device, "; move it to ", device,
              " first (all tensors of one call must be on one device)");
  TORCH_CHECK(x->is_floating_point(), op, ": ", name, " must be a floating-point tensor, got ",
              x->scalar_type());
}

// grad_scale and found_inf, the optional arguments of every op.
inline void check_amp(const OptionalTensor& grad_scale, const OptionalTensor& found_inf,
                      const at::Device& device, const char* op) {
  check_optional_scalar(grad_scale, device, op, "grad_scale");
  check_optional_scalar(found_inf, device, op, "found_inf");
}

// The lists of one bucket: `ref` (params, or grads for the reduction) sets device, dtype and
// layout; `same_dtype` lists share its dtype (grads), `states` share one state dtype (the
// ref's dtype when there are none).
template <typename Pairs>
Bucket check_bucket(const char* op, at::DeviceType type, NamedList ref,
                    const std::vector<NamedList>& same_dtype,
                    const std::vector<NamedList>& states, at::TensorList steps) {
  const size_t n = ref.list.size();
  for (const NamedList& l : same_dtype) check_count(l.list, n, op, l.name, ref.name);
  for (const NamedList& l : states) check_count(l.list, n, op, l.name, ref.name);
  const at::Device device = device_of(ref, type, op);
  const at::ScalarType param_dtype = ref.list[0].scalar_type();
  const at::ScalarType state_dtype =
      states.empty() ? param_dtype : states.front().list[0].scalar_type();
  Pairs::check(param_dtype, state_dtype, op, ref.name);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = ref.list[i];
    TORCH_CHECK(p.device() == device, op, ": ", ref.name, "[", i, "] is on ", p.device(),
                " but ", ref.name, "[0] is on ", device, "; one call takes one device");
    check_like(p, p, param_dtype, op, ref.name, ref.name, i);
    for (const NamedList& l : same_dtype) {
      check_like(p, l.list[i], param_dtype, op, l.name, ref.name, i);
    }
    for (const NamedList& l : states) {
      check_like(p, l.list[i], state_dtype, op, l.name, ref.name, i);
    }
  }
  check_scalar_list(steps, n, at::kFloat, device, op, "state_steps");
  return {device, param_dtype, state_dtype};
}

// ---------------------------------------------------------------- per op ----------------
// Each op's checks; the ref list (params, or grads) must not be empty: an empty bucket is a
// no-op that every device returns from first.

template <typename Pairs>
Bucket check_op(const AdamReduceArgs& a, at::DeviceType type, const char* op) {
  std::vector<NamedList> states;
  if (a.amsgrad) states = {{a.exp_avg_sqs, "exp_avg_sqs"}, {a.max_exp_avg_sqs, "max_exp_avg_sqs"}};
  const Bucket b = check_bucket<Pairs>(op, type, {a.grads, "grads"}, {}, states, a.state_steps);
  check_accum(a.accum, b.device, op);
  if (!a.amsgrad) check_v_sums(a.v_sums, a.grads.size(), b, op);
  check_amp(a.grad_scale, a.found_inf, b.device, op);
  return b;
}

// An update op's bucket (params, grads, `states`) and one-value arguments; `accum` is null
// for SGDS, which reads no mean.
template <typename Pairs, typename Args>
Bucket check_update(const Args& a, const std::vector<NamedList>& states,
                    const at::Tensor* accum, at::DeviceType type, const char* op) {
  const Bucket b = check_bucket<Pairs>(op, type, {a.params, "params"}, {{a.grads, "grads"}},
                                       states, a.state_steps);
  if (accum != nullptr) check_accum(*accum, b.device, op);
  check_optional_scalar(a.lr_tensor, b.device, op, "lr_tensor");
  check_amp(a.grad_scale, a.found_inf, b.device, op);
  return b;
}

template <typename Pairs>
Bucket check_op(const AdamUpdateArgs& a, at::DeviceType type, const char* op) {
  std::vector<NamedList> states = {{a.exp_avgs, "exp_avgs"}, {a.exp_avg_sqs, "exp_avg_sqs"}};
  if (a.amsgrad) states.push_back({a.max_exp_avg_sqs, "max_exp_avg_sqs"});
  const Bucket b = check_update<Pairs>(a, states, &a.accum, type, op);
  if (update_writes_v_sums(b.state_dtype, a.amsgrad)) {
    check_v_sums(a.v_sums, a.params.size(), b, op);
  }
  return b;
}

template <typename Pairs>
Bucket check_op(const AdamStepArgs& a, at::DeviceType type, const char* op) {
  const Bucket b = check_op<Pairs>(a.update, type, op);
  if (!a.update.amsgrad) check_v_sums(a.update.v_sums, a.update.params.size(), b, op);
  return b;
}

template <typename Pairs>
Bucket check_op(const AdaiUpdateArgs& a, at::DeviceType type, const char* op) {
  const Bucket b = check_update<Pairs>(
      a,
      {{a.exp_avgs, "exp_avgs"}, {a.exp_avg_sqs, "exp_avg_sqs"}, {a.beta1_prods, "beta1_prods"}},
      &a.accum, type, op);
  if (update_writes_v_sums(b.state_dtype, false)) {
    check_v_sums(a.v_sums, a.params.size(), b, op);
  }
  return b;
}

template <typename Pairs>
Bucket check_op(const SgdUpdateArgs& a, at::DeviceType type, const char* op) {
  std::vector<NamedList> states;
  if (a.momentum != 0.0) states.push_back({a.momentum_buffers, "momentum_buffers"});
  return check_update<Pairs>(a, states, nullptr, type, op);
}

}  // namespace swd
