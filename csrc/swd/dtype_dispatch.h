// Which (param dtype, state dtype) storage pairs a device's kernels are built for, and how a
// kernel is instantiated for the pair of a call: dispatch() calls f(TypeTag<P>{},
// TypeTag<S>{}) with the C++ storage types. The rule is the Python side's
// (swd_kernels.backends.dtype_reason): params of a dtype in kParams, states in the param
// dtype or in one of kStatesBeside; Python reads these sets from the library (csrc/ops.cpp
// storage_dtypes), so the native backend's table is written here only. Host code only.
#pragma once

#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace swd {

template <typename T>
struct TypeTag {
  using type = T;
};

// A set of storage dtypes, one bit each.
enum StorageDtypes : unsigned {
  kFloat32 = 1u,
  kBFloat16 = 2u,
  kFloat16 = 4u,
  kFloat64 = 8u,
};

// The names of a set's dtypes (torch's: "float32", ...), in bit order.
inline std::vector<const char*> dtype_names(unsigned set) {
  static const char* const kNames[] = {"float32", "bfloat16", "float16", "float64"};
  std::vector<const char*> out;
  for (unsigned b = 0; b < 4; ++b) {
    if (((set >> b) & 1u) != 0) out.push_back(kNames[b]);
  }
  return out;
}

template <unsigned kParams, unsigned kStatesBeside>
struct DtypePairs {
  // the table itself, which swd_kernels/backends/native reads through swd_kernels._C
  static constexpr unsigned kParamDtypes = kParams;
  static constexpr unsigned kStateDtypesBeside = kStatesBeside;

  static bool supported(at::ScalarType param, at::ScalarType state) {
    return contains(kParams, param) && (state == param || contains(kStatesBeside, state));
  }

  // `name` is the reference list of the call (params, or grads for the reduction).
  static void check(at::ScalarType param, at::ScalarType state, const char* op,
                    const char* name) {
    TORCH_CHECK(contains(kParams, param), op, ": ", name, " have dtype ", param,
                "; these kernels take ", names(kParams), " ", name,
                " (use backend='torch' for other dtypes)");
    TORCH_CHECK(supported(param, state), op, ": these kernels keep optimizer state in the ",
                "param dtype or in ", names(kStatesBeside), ", got ", param, " ", name,
                " with ", state, " state; use state_dtype=None or one of those, or "
                "backend='torch'");
  }

  // f(TypeTag<P>{}, TypeTag<S>{}) for a pair check() accepts.
  template <typename F>
  static void dispatch(at::ScalarType param, at::ScalarType state, F&& f) {
    TORCH_INTERNAL_ASSERT(supported(param, state), "unchecked storage dtypes ", param, ", ",
                          state);
    visit<kParams>(param, [&](auto param_tag) {
      if (state == param) {
        f(param_tag, param_tag);
      } else {
        visit<kStatesBeside>(state, [&](auto state_tag) { f(param_tag, state_tag); });
      }
    });
  }

 private:
  static unsigned bit(at::ScalarType dtype) {
    switch (dtype) {
      case at::kFloat: return kFloat32;
      case at::kBFloat16: return kBFloat16;
      case at::kHalf: return kFloat16;
      case at::kDouble: return kFloat64;
      default: return 0u;
    }
  }

  static bool contains(unsigned set, at::ScalarType dtype) { return (set & bit(dtype)) != 0; }

  // "float32, bfloat16 or float16"
  static std::string names(unsigned set) {
    const std::vector<const char*> listed = dtype_names(set);
    std::string out;
    for (size_t i = 0; i < listed.size(); ++i) {
      if (i > 0) out += i + 1 == listed.size() ? " or " : ", ";
      out += listed[i];
    }
    return out;
  }

  // f(TypeTag<T>{}) for the storage type T of `dtype`, which `kSet` holds.
  template <unsigned kSet, typename F>
  static void visit(at::ScalarType dtype, F&& f) {
    switch (dtype) {
      case at::kFloat:
        if constexpr ((kSet & kFloat32) != 0) f(TypeTag<float>{});
        return;
      case at::kBFloat16:
        if constexpr ((kSet & kBFloat16) != 0) f(TypeTag<c10::BFloat16>{});
        return;
      case at::kHalf:
        if constexpr ((kSet & kFloat16) != 0) f(TypeTag<c10::Half>{});
        return;
      case at::kDouble:
        if constexpr ((kSet & kFloat64) != 0) f(TypeTag<double>{});
        return;
      default:
        return;
    }
  }
};

// The CPU kernels: fp32/bf16/fp16 params, states in any of those.
using CpuDtypePairs = DtypePairs<kFloat32 | kBFloat16 | kFloat16, kFloat32 | kBFloat16 | kFloat16>;
// The CUDA kernels: float64 params too; states in the param dtype or fp32.
using CudaDtypePairs = DtypePairs<kFloat32 | kBFloat16 | kFloat16 | kFloat64, kFloat32>;

}  // namespace swd
