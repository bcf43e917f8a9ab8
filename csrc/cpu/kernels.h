// The CPU kernels' interface: plain pointers, element counts and per-tensor scalars, no
// at::Tensor. csrc/cpu/ops_cpu.cpp validates the tensors and fills these structs; the kernels
// (kernels_impl.h) are compiled once per CPU capability and chosen at run time.
#pragma once

#include <cstdint>

#include "swd/rules.h"

namespace swd::cpu {

// Storage dtypes the kernels read and write; math is always fp32.
enum class Dtype : int { kFloat, kBFloat16, kHalf };

// The gradient as the rules see it: divided by grad_scale (when `scaled`), negated under
// maximize. Skipping the division when unscaled is exact (g / 1 == g).
struct GradOptions {
  bool scaled = false;
  float grad_scale = 1.0f;
  bool maximize = false;
};

// ---- adam_reduce (pass 1) ----
struct ReduceTensor {
  const void* grad;
  const void* exp_avg_sq;       // amsgrad only
  const void* max_exp_avg_sq;   // amsgrad only
  int64_t numel;
};
struct AdamReduce {
  Dtype param_dtype, state_dtype;
  const ReduceTensor* tensors;
  int64_t count;
  bool amsgrad;
  float beta2, one_minus_beta2;  // 1 - beta2 formed in double, as swd/rules.h does
  GradOptions grad;  // maximize is ignored (squares)
};

// ---- adam_update (pass 2) ----
struct AdamTensor {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  void* max_exp_avg_sq;  // amsgrad only
  int64_t numel;
  AdamScalars scalars;
};
struct AdamUpdate {
  Dtype param_dtype, state_dtype;
  const AdamTensor* tensors;
  int64_t count;
  bool amsgrad;
  GradOptions grad;
};

// ---- adai_update ----
struct AdaiTensor {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  void* beta1_prod;
  int64_t numel;
  AdaiScalars scalars;
};
struct AdaiUpdate {
  Dtype param_dtype, state_dtype;
  const AdaiTensor* tensors;
  int64_t count;
  GradOptions grad;
};

// ---- sgd_update ----
struct SgdTensor {
  void* param;
  const void* grad;
  void* momentum_buffer;  // null when momentum == 0
  int64_t numel;
  SgdScalars scalars;
};
struct SgdUpdate {
  Dtype param_dtype, state_dtype;
  const SgdTensor* tensors;
  int64_t count;
  bool nesterov;
  GradOptions grad;
};

// One build of every kernel for one CPU capability.
struct Kernels {
  const char* capability;
  // sums[i]: amsgrad: the sum of the new max_exp_avg_sq of tensor i (not written);
  // otherwise the sum of grad^2 of tensor i, grads not unscaled (the caller divides by
  // grad_scale^2 in double). Deterministic for any thread count.
  void (*adam_reduce)(const AdamReduce&, double* sums);
  void (*adam_update)(const AdamUpdate&);
  void (*adai_update)(const AdaiUpdate&);
  void (*sgd_update)(const SgdUpdate&);
};

namespace capability_default { const Kernels& kernels(); }
namespace capability_avx2 { const Kernels& kernels(); }
namespace capability_avx512 { const Kernels& kernels(); }

// The fastest build this CPU runs (AVX-512, else AVX2+FMA+F16C, else the portable one);
// SWD_KERNELS_CPU_CAPABILITY=default|avx2|avx512 overrides, read once.
const Kernels& best_kernels();

}  // namespace swd::cpu
