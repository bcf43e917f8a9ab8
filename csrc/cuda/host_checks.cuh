// The host side of the CUDA entry points: the op contract's checks (swd/op_checks.h) for the
// dtypes the CUDA kernels take, and the one-value arguments moved to the device. The checks
// read tensor metadata only and the moves are enqueued on the current stream, so a bad call
// launches nothing and a good one never synchronises.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/chunk_phases.cuh"
#include "swd/op_checks.h"

namespace swd::cuda {

template <typename Args>
Bucket check(const Args& args, const char* op) {
  return check_op<CudaDtypePairs>(args, at::kCUDA, op);
}

template <typename T>
const T* pointer_or_null(const at::Tensor& t) {
  return t.defined() && t.scalar_type() == c10::CppTypeToScalarType<T>::value
             ? t.const_data_ptr<T>()
             : nullptr;
}

// A checked optional one-value argument as a `dtype` tensor on its device (converted there,
// asynchronously), or an undefined tensor when not given.
inline at::Tensor device_scalar(const OptionalTensor& x, at::ScalarType dtype) {
  if (!x.has_value() || !x->defined()) return at::Tensor();
  return x->to(dtype).contiguous();
}

// The one-value arguments of a call on the device. lr_tensor stays float32 or float64,
// whichever it is (other dtypes become float64), so the usual fp32 lr needs no conversion
// launch; the kernels read whichever pointer is set.
struct DeviceScalars {
  at::Tensor lr, grad_scale, found_inf;

  DeviceScalars(const OptionalTensor& lr_tensor, const OptionalTensor& grad_scale_arg,
                const OptionalTensor& found_inf_arg)
      : grad_scale(device_scalar(grad_scale_arg, at::kFloat)),
        found_inf(device_scalar(found_inf_arg, at::kFloat)) {
    if (lr_tensor.has_value() && lr_tensor->defined()) {
      const at::ScalarType dtype = lr_tensor->scalar_type();
      lr = device_scalar(lr_tensor, dtype == at::kFloat ? at::kFloat : at::kDouble);
    }
  }

  AmpInputs amp() const {
    return {pointer_or_null<float>(grad_scale), pointer_or_null<float>(found_inf)};
  }

  // `accum` is null for SGDS, which reads no mean.
  StepInputs step(double lr_value, const double* accum) const {
    return {pointer_or_null<float>(lr), pointer_or_null<double>(lr), lr_value, accum,
            pointer_or_null<float>(found_inf)};
  }
};

// The start of every CUDA op, in this order: the checks, then the device guard (on the
// checked device) and the one-value arguments on that device.
struct CheckedCall {
  Bucket bucket;
  c10::cuda::CUDAGuard guard;
  DeviceScalars scalars;

  template <typename Args>
  CheckedCall(const Args& args, const char* op, const OptionalTensor& lr_tensor,
              const OptionalTensor& grad_scale, const OptionalTensor& found_inf)
      : bucket(check(args, op)),
        guard(bucket.device),
        scalars(lr_tensor, grad_scale, found_inf) {}
};

}  // namespace swd::cuda
