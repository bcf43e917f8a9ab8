// Host-side argument checks and dtype dispatch shared by the CUDA launchers. Every check runs
// on tensor metadata only (no device access), before anything is launched, so a bad call
// changes nothing and a good one never synchronises.
#pragma once

#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace swd::cuda {

using OptionalTensor = std::optional<at::Tensor>;

inline void check_count(at::TensorList list, size_t n, const char* op, const char* name) {
  TORCH_CHECK(list.size() == n, op, ": ", name, " has ", list.size(),
              " tensors but params/grads have ", n, "; every list holds one entry per param");
}

// `t` (entry i of list `name`) must lie on `device` in `dtype`, with the shape and (on every
// dimension longer than 1) the strides of `ref`, and be dense: kernels walk them as flat
// arrays in the same order.
inline void check_like(const at::Tensor& ref, const at::Tensor& t, at::ScalarType dtype,
                       const char* op, const char* name, size_t i) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, "[", i, "] is on ", t.device(),
              " but params[", i, "] is on ", ref.device(), "; one call takes one device");
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, "[", i, "] has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, "[", i, "] has shape ", t.sizes(),
              " but params[", i, "] has shape ", ref.sizes());
  for (int64_t d = 0; d < t.dim(); ++d) {
    TORCH_CHECK(t.size(d) <= 1 || t.stride(d) == ref.stride(d), op, ": ", name, "[", i,
                "] has strides ", t.strides(), " but params[", i, "] has ", ref.strides(),
                "; give it the param's memory layout (torch.empty_like(p).copy_(x))");
  }
  TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", name, "[", i,
              "] is not dense (a view with gaps); pass a contiguous copy");
}

inline void check_scalar_list(at::TensorList list, at::ScalarType dtype, const at::Device& device,
                              const char* op, const char* name) {
  for (size_t i = 0; i < list.size(); ++i) {
    const at::Tensor& t = list[i];
    TORCH_CHECK(t.numel() == 1 && t.scalar_type() == dtype && t.device() == device, op, ": ",
                name, "[", i, "] must be a one-element ", dtype, " tensor on ", device, ", got ",
                t.scalar_type(), " of shape ", t.sizes(), " on ", t.device());
  }
}

// An optional one-value argument (grad_scale, found_inf, lr_tensor) as a `dtype` tensor on
// `device` (converted there, asynchronously), or an undefined tensor when not given.
inline at::Tensor device_scalar(const OptionalTensor& x, at::ScalarType dtype,
                                const at::Device& device, const char* op, const char* name) {
  if (!x.has_value() || !x->defined()) return at::Tensor();
  TORCH_CHECK(x->numel() == 1, op, ": ", name, " must hold exactly one value, got shape ",
              x->sizes());
  TORCH_CHECK(x->device() == device, op, ": ", name, " is on ", x->device(),
              " but the tensors are on ", device, "; move it to ", device,
              " first (reading it from another device would synchronise every step)");
  TORCH_CHECK(x->is_floating_point(), op, ": ", name, " must be a floating-point tensor, got ",
              x->scalar_type());
  return x->to(dtype).contiguous();
}

// lr_tensor on `device` as float32 or float64 (other dtypes converted to float64 there).
inline at::Tensor device_lr(const OptionalTensor& lr_tensor, const at::Device& device,
                            const char* op) {
  if (!lr_tensor.has_value() || !lr_tensor->defined()) return at::Tensor();
  const at::ScalarType dtype = lr_tensor->scalar_type();
  const bool readable = dtype == at::kFloat || dtype == at::kDouble;
  return device_scalar(lr_tensor, readable ? dtype : at::kDouble, device, op, "lr_tensor");
}

inline const float* lr_f32(const at::Tensor& lr) {
  return lr.defined() && lr.scalar_type() == at::kFloat ? lr.const_data_ptr<float>() : nullptr;
}

inline const double* lr_f64(const at::Tensor& lr) {
  return lr.defined() && lr.scalar_type() == at::kDouble ? lr.const_data_ptr<double>()
                                                          : nullptr;
}

template <typename T>
const T* pointer_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The device of a call: that of list[0], which must be a CUDA tensor. Checked before the
// device guard is set, which would otherwise fail with a message naming no argument.
inline at::Device cuda_device_of(at::TensorList list, const char* op, const char* name) {
  TORCH_CHECK(list[0].is_cuda(), op, ": ", name, "[0] is on ", list[0].device(),
              ", expected a CUDA device; all tensors of one call must be on one GPU");
  return list[0].device();
}

// ---------------------------------------------------------------- dtype dispatch ---------

template <typename T>
struct TypeTag {
  using type = T;
};

// f(TypeTag<P>{}) for the param dtype P.
template <typename F>
void dispatch_param_dtype(at::ScalarType p, const char* op, F&& f) {
  switch (p) {
    case at::kFloat: f(TypeTag<float>{}); return;
    case at::kBFloat16: f(TypeTag<at::BFloat16>{}); return;
    case at::kHalf: f(TypeTag<at::Half>{}); return;
    case at::kDouble: f(TypeTag<double>{}); return;
    default:
      TORCH_CHECK(false, op, ": the native CUDA kernels take float32, bfloat16, float16 or "
                  "float64 params, got ", p, "; use backend='torch'");
  }
}

// f(TypeTag<P>{}, TypeTag<S>{}) for param dtype P and state dtype S (S is P or float32).
template <typename F>
void dispatch_dtypes(at::ScalarType p, at::ScalarType s, const char* op, F&& f) {
  dispatch_param_dtype(p, op, [&](auto param_tag) {
    using P = typename decltype(param_tag)::type;
    if (s == p) {
      f(param_tag, param_tag);
    } else if (s == at::kFloat) {
      f(param_tag, TypeTag<float>{});
    } else {
      TORCH_CHECK(false, op, ": the native CUDA kernels keep optimizer state in the param "
                  "dtype or in float32, got ", p, " params with ", s, " state; use "
                  "state_dtype=None or torch.float32, or backend='torch'");
    }
    (void)sizeof(P);
  });
}

}  // namespace swd::cuda

namespace swd::cuda {

struct NamedList {
  at::TensorList list;
  const char* name;
};

// The lists of one bucket: `ref` (params, or grads for the reduction) sets device, dtype
// and layout; `same_dtype` lists share its dtype (grads), `states` share one state dtype.
// Returns the state dtype (the ref's dtype when there are no states).
inline at::ScalarType check_bucket(const char* op, NamedList ref,
                                   const std::vector<NamedList>& same_dtype,
                                   const std::vector<NamedList>& states,
                                   at::TensorList steps) {
  const size_t n = ref.list.size();
  for (const NamedList& l : same_dtype) check_count(l.list, n, op, l.name);
  for (const NamedList& l : states) check_count(l.list, n, op, l.name);
  check_count(steps, n, op, "state_steps");
  const at::Tensor& first = ref.list[0];
  const at::Device device = first.device();
  TORCH_CHECK(first.is_cuda(), op, ": ", ref.name, "[0] is on ", device, ", expected CUDA");
  const at::ScalarType param_dtype = first.scalar_type();
  const at::ScalarType state_dtype = states.empty() ? param_dtype
                                                    : states.front().list[0].scalar_type();
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = ref.list[i];
    TORCH_CHECK(p.device() == device, op, ": ", ref.name, "[", i, "] is on ", p.device(),
                " but ", ref.name, "[0] is on ", device, "; one call takes one device");
    check_like(p, p, param_dtype, op, ref.name, i);
    for (const NamedList& l : same_dtype) check_like(p, l.list[i], param_dtype, op, l.name, i);
    for (const NamedList& l : states) check_like(p, l.list[i], state_dtype, op, l.name, i);
  }
  check_scalar_list(steps, at::kFloat, device, op, "state_steps");
  return state_dtype;
}

inline void check_accum(const at::Tensor& accum, const at::Device& device, const char* op) {
  TORCH_CHECK(accum.scalar_type() == at::kDouble && accum.numel() >= 2 &&
                  accum.is_contiguous() && accum.device() == device,
              op, ": accum must be a contiguous float64 tensor [sum, count] on ", device,
              ", got ", accum.scalar_type(), " of shape ", accum.sizes(), " on ",
              accum.device());
}

}  // namespace swd::cuda
