// The step-wide and per-tensor quantities the kernels read, formed in double and rounded to
// fp32 once (docs/design.md §6): in fp32, 1 - 0.999f is 1.3e-5 (relative) off 0.001, and
// 1 - beta2^t as far off at t = 1, enough to fail the fp32 oracle. One source for the CPU host
// code and the CUDA kernels, not one result: CUDA's double pow() is not correctly rounded, so
// the two may differ in the last bit (docs/design.md §6: the oracle tolerance across devices).
#pragma once

#include "swd/value_ops.h"

namespace swd {

// The op contract's accumulator: float64 [sum of v_hat, element count, sum of g^2, clip term].
// Every adam_reduce adds its bucket's share; the updates read only the first two.
enum AccumIndex : int {
  kVhatSum = 0,    // sum over tensors of sum(v or vmax) / (1 - beta2^t)
  kCount = 1,      // elements counted
  kGradSqSum = 2,  // sum of (grad / grad_scale)^2, both amsgrad values
  kClipTerm = 3,   // sum over tensors of clip_term() (amsgrad=False only)
  kAccumSize = 4,
};

// v_bar = sum / count, 0 when nothing was counted (accum[kVhatSum], accum[kCount]).
SWD_HD double global_mean(double sum, double count) {
  return count > 0 ? sum / count : 0.0;
}

// 1 / (v_bar + decay_eps)^p: 1 when p == 0 (exactly AdamW), 0 when the base is 0 (all grads
// so far exactly zero: no decay rather than inf or NaN).
SWD_HD double decay_scale(double v_bar, double decay_power, double decay_eps) {
  if (decay_power == 0.0) return 1.0;
  const double base = v_bar + decay_eps;
  return base > 0.0 ? ::pow(base, -decay_power) : 0.0;
}

// 1 - beta^t for a step count t (t >= 1).
SWD_HD double one_minus_pow(double beta, double t) { return 1.0 - ::pow(beta, t); }

// The step count t a tensor's bias corrections use: its step count after this step.
SWD_HD double step_after(float step_before) { return static_cast<double>(step_before) + 1.0; }

// The coefficients of v <- beta2 * v + (1 - beta2) * g^2 (swd::second_moment).
struct SecondMoment {
  float beta2, one_minus_beta2;
};

SWD_HD SecondMoment second_moment_coefficients(double beta2) {
  return {static_cast<float>(beta2), static_cast<float>(1.0 - beta2)};
}

// The linear identity of docs/design.md §3: a tensor's new sum of exp_avg_sq from its previous
// sum and this step's sum of (unscaled) g^2.
SWD_HD double updated_v_sum(double v_sum, double sum_g2, double beta2) {
  return beta2 * v_sum + (1.0 - beta2) * sum_g2;
}

// A tensor's share of sum(v_hat): its sum of v (or of vmax) over 1 - beta2^t.
SWD_HD double v_hat_sum(double v_sum, double beta2, float step_before) {
  return v_sum / one_minus_pow(beta2, step_after(step_before));
}

// A tensor's share of accum[kClipTerm]: the part of its v_hat_sum() that this step's grads
// add through the linear identity, (1 - beta2) * sum(g^2) / (1 - beta2^t). Clipping the grads
// by c scales it by c^2, so the optimizer can correct accum[kVhatSum] once c is known.
SWD_HD double clip_term(double sum_g2, double beta2, float step_before) {
  return (1.0 - beta2) * sum_g2 / one_minus_pow(beta2, step_after(step_before));
}

}  // namespace swd
