// The CPU kernels' interface: plain pointers, element counts and per-tensor scalars, no
// at::Tensor. cpu/ops_cpu.cpp checks the tensors and fills these structs; the kernels
// (kernels_impl.h) are compiled once per CPU capability and chosen at run time.
#pragma once

#include <cstdint>
#include <tuple>

#include <c10/core/ScalarType.h>

#include "swd/rules.h"

namespace swd::cpu {

// ---- pass 1: adam_reduce ----
struct ReduceTensor {
  const void* grad;
  const void* exp_avg_sq;      // amsgrad only
  const void* max_exp_avg_sq;  // amsgrad only
  int64_t numel;
};
struct ReduceCall {
  at::ScalarType param_dtype, state_dtype;
  const ReduceTensor* tensors;
  int64_t count;
  bool amsgrad;
  SecondMoment second_moment;  // amsgrad only
  GradOptions grad;            // amsgrad only (the squares of g are summed unscaled)
};

// ---- pass 2: every update op, for one rule of swd/rules.h ----
template <typename Rule>
struct UpdateTensor {
  void* param;
  const void* grad;
  void* states[kStateSlots<Rule>];  // the rule's state lists, in its order
  int64_t numel;
  typename Rule::Scalars scalars;
};
template <typename Rule>
struct UpdateCall {
  at::ScalarType param_dtype, state_dtype;
  const UpdateTensor<Rule>* tensors;
  int64_t count;
  GradOptions grad;
  // null, or per tensor: the sum of the rule's summed state as stored (16-bit state only,
  // swd/rules.h kSumsStoredState). Deterministic for any thread count.
  double* stored_sums;
};

template <typename Rule>
using UpdateKernel = void (*)(const UpdateCall<Rule>&);

// One update kernel per rule, looked up by the rule's type.
template <typename... Rules>
struct UpdateKernels {
  std::tuple<UpdateKernel<Rules>...> kernels;

  template <typename Rule>
  void run(const UpdateCall<Rule>& call) const {
    std::get<UpdateKernel<Rule>>(kernels)(call);
  }
};

// The rules the CPU kernels are built for.
using CpuUpdateKernels =
    UpdateKernels<AdamRule<false>, AdamRule<true>, AdaiRule, SgdRule<false>, SgdRule<true>>;

// One build of every kernel for one CPU capability.
struct Kernels {
  const char* capability;
  // grad_sq_sums[i]: the sum of grad^2 of tensor i, grads not unscaled (the caller divides
  // by grad_scale^2 in double); amsgrad only, vmax_sums[i]: the sum of its new
  // max_exp_avg_sq (not written). Deterministic for any thread count.
  void (*adam_reduce)(const ReduceCall&, double* grad_sq_sums, double* vmax_sums);
  CpuUpdateKernels update;
};

namespace capability_default { const Kernels& kernels(); }
namespace capability_avx2 { const Kernels& kernels(); }
namespace capability_avx512 { const Kernels& kernels(); }

// The fastest build this CPU runs (AVX-512, else AVX2+FMA+F16C, else the portable one);
// SWD_KERNELS_CPU_CAPABILITY=default|avx2|avx512 overrides, read once.
const Kernels& best_kernels();

}  // namespace swd::cpu
