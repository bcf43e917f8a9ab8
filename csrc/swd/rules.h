// The per-element rules of docs/design.md §1, written once for every value type they run on:
// float in the CUDA kernels and the CPU tails, at::vec::Vectorized<float> in the CPU vector
// loops (cpu/vec_value_ops.h). Math is fp32 for every storage dtype; the per-tensor scalars
// are formed in double (swd/step_scalars.h) and rounded once.
//
// One source is not one result: g++ contracts a * b + c into FMA in the AVX2 / AVX-512 CPU
// builds (their objects hold vfmadd instructions), the portable CPU build has no FMA, and the
// CUDA build turns contraction off (setup.py, -fmad=false: nvcc contracted each inlined copy
// of a rule its own way, so two CUDA paths running the same rules differed by a few ulps).
// Results are bitwise repeatable on one device and build, and the CUDA paths bitwise equal
// each other; across devices and builds they agree within the oracle tolerance
// (docs/design.md §6, §7).
//
// Each update rule is a functor that the CPU chunk loop (cpu/kernels_impl.h) and the CUDA
// update (cuda/chunk_phases.cuh) take as a template argument:
//   Hyper      the op's hyperparameters
//   Scalars    one tensor's fp32 scalars, formed by scalars(hyper, lr, v_bar, step before)
//   kStates    how many state lists follow param and grad, in the op's argument order
//   kSummedState  the state (exp_avg_sq) whose sums the op keeps in v_sums; -1: none
//   element()  one element (or one vector of elements): param, effective grad, states
#pragma once

#include "swd/step_scalars.h"
#include "swd/value_ops.h"

namespace swd {

// The gradient the rules see: unscaled (GradScaler) and negated under maximize. The user's
// grad tensor is never written. Without a grad scale there is no divide (g / 1 == g anyway).
struct GradOptions {
  bool scaled;
  float grad_scale;
  bool maximize;
};

template <typename V>
SWD_HD V effective_grad(V g, const GradOptions& o) {
  if (o.scaled) g = g / V(o.grad_scale);
  return o.maximize ? -g : g;
}

// beta2 * v + (1 - beta2) * g^2
template <typename V>
SWD_HD V second_moment(const V& v, const V& g, const SecondMoment& c) {
  return V(c.beta2) * v + V(c.one_minus_beta2) * g * g;
}

// AMSGradS's new max_exp_avg_sq, max(vmax, v_new): pass 1 sums it without storing it.
template <typename V>
SWD_HD V new_max_exp_avg_sq(const V& v, const V& vmax, const V& g, const SecondMoment& c) {
  return swd::larger(vmax, swd::second_moment(v, g, c));
}

// ---------------------------------------------------------------- AdamS / AMSGradS --------

struct AdamScalars {
  SecondMoment second_moment;
  float one_minus_beta1, eps;
  float decay;      // 1 - lr * wd * decay_scale(v_bar)
  float step_size;  // lr / (1 - beta1^t)
  float sqrt_bc2;   // sqrt(1 - beta2^t)
};

struct AdamHyper {
  double beta1, beta2, weight_decay, eps, decay_power, decay_eps;
};

template <bool kAmsgrad>
struct AdamRule {
  using Hyper = AdamHyper;
  using Scalars = AdamScalars;
  static constexpr int kStates = kAmsgrad ? 3 : 2;  // exp_avg, exp_avg_sq[, max_exp_avg_sq]
  static constexpr int kSummedState = kAmsgrad ? -1 : 1;

  SWD_HD static Scalars scalars(const Hyper& h, double lr, double v_bar, float step_before) {
    const double t = step_after(step_before);
    Scalars s;
    s.second_moment = second_moment_coefficients(h.beta2);
    s.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
    s.eps = static_cast<float>(h.eps);
    s.decay = static_cast<float>(
        1.0 - lr * h.weight_decay * decay_scale(v_bar, h.decay_power, h.decay_eps));
    s.step_size = static_cast<float>(lr / one_minus_pow(h.beta1, t));
    s.sqrt_bc2 = static_cast<float>(::sqrt(one_minus_pow(h.beta2, t)));
    return s;
  }

  template <typename V>
  SWD_HD static void element(V& p, const V& g, V (&state)[kStates], const Scalars& s) {
    V& m = state[0];
    V& v = state[1];
    m = m + V(s.one_minus_beta1) * (g - m);  // lerp, as torch.optim.AdamW forms it
    v = swd::second_moment(v, g, s.second_moment);
    V v_used = v;
    if constexpr (kAmsgrad) {
      state[2] = swd::larger(state[2], v);
      v_used = state[2];
    }
    const V denom = swd::square_root(v_used) / V(s.sqrt_bc2) + V(s.eps);
    p = p * V(s.decay) - V(s.step_size) * m / denom;
  }
};

// ---------------------------------------------------------------- AdaiS -------------------

struct AdaiScalars {
  SecondMoment second_moment;
  float beta0, eps;
  float decay;  // 1 - lr * wd
  float lr;
  float bc2;    // 1 - beta2^t
  float v_bar;  // global mean of v_hat; 0 means "take v_hat / v_bar as 1"
};

struct AdaiRule {
  struct Hyper {
    double beta0, beta2, weight_decay, eps;
  };
  using Scalars = AdaiScalars;
  static constexpr int kStates = 3;  // exp_avg, exp_avg_sq, beta1_prod
  static constexpr int kSummedState = 1;

  SWD_HD static Scalars scalars(const Hyper& h, double lr, double v_bar, float step_before) {
    Scalars s;
    s.second_moment = second_moment_coefficients(h.beta2);
    s.beta0 = static_cast<float>(h.beta0);
    s.eps = static_cast<float>(h.eps);
    s.decay = static_cast<float>(1.0 - lr * h.weight_decay);
    s.lr = static_cast<float>(lr);
    s.bc2 = static_cast<float>(one_minus_pow(h.beta2, step_after(step_before)));
    s.v_bar = static_cast<float>(v_bar);
    return s;
  }

  template <typename V>
  SWD_HD static void element(V& p, const V& g, V (&state)[kStates], const Scalars& s) {
    V& m = state[0];
    V& v = state[1];
    V& beta1_prod = state[2];
    v = swd::second_moment(v, g, s.second_moment);
    const V ratio = s.v_bar > 0.0f ? (v / V(s.bc2)) / V(s.v_bar) : V(1.0f);
    // beta1 = clamp(1 - beta0 * ratio, 0, 1 - eps), formed through 1 - beta1 itself: at the
    // bound 1 - beta1 = eps exactly, where 1 - (1 - eps) in fp32 would be 4.7e-5 off for 1e-3
    const V one_minus_beta1 = swd::clamp(V(s.beta0) * ratio, V(s.eps), V(1.0f));
    const V beta1 = V(1.0f) - one_minus_beta1;
    beta1_prod = beta1_prod * beta1;
    m = beta1 * m + one_minus_beta1 * g;
    p = p * V(s.decay) - V(s.lr) * m / (V(1.0f) - beta1_prod);
  }
};

// ---------------------------------------------------------------- SGDS --------------------

struct SgdScalars {
  float lr, momentum, one_minus_dampening;
  float decay;  // 1 - (1 - dampening) / (1 - momentum) * lr * wd
  bool first;   // the tensor's first step: buf = g
  bool nesterov;
};

struct SgdHyper {
  double momentum, dampening, weight_decay;
  bool nesterov;
};

template <bool kMomentum>
struct SgdRule {
  using Hyper = SgdHyper;
  using Scalars = SgdScalars;
  static constexpr int kStates = kMomentum ? 1 : 0;  // momentum_buffer
  static constexpr int kSummedState = -1;

  SWD_HD static Scalars scalars(const Hyper& h, double lr, double /*v_bar*/,
                                float step_before) {
    Scalars s;
    s.lr = static_cast<float>(lr);
    s.momentum = static_cast<float>(h.momentum);
    s.one_minus_dampening = static_cast<float>(1.0 - h.dampening);
    s.decay = static_cast<float>(
        1.0 - (1.0 - h.dampening) / (1.0 - h.momentum) * lr * h.weight_decay);
    s.first = step_before == 0.0f;
    s.nesterov = h.nesterov;
    return s;
  }

  // Without momentum there is no buffer: callers pass one slot, which is left alone.
  template <typename V>
  SWD_HD static void element(V& p, const V& g, V (&state)[1], const Scalars& s) {
    V direction = g;
    if constexpr (kMomentum) {
      V& buf = state[0];
      buf = s.first ? g : V(s.momentum) * buf + V(s.one_minus_dampening) * g;
      direction = s.nesterov ? g + V(s.momentum) * buf : buf;
    }
    p = p * V(s.decay) - V(s.lr) * direction;
  }
};

// The state slots a caller hands element(): a rule without state still takes one.
template <typename Rule>
constexpr int kStateSlots = Rule::kStates > 0 ? Rule::kStates : 1;

// Whether an update with `Rule` on state storage S sums the stored values of its summed
// state for v_sums: 16-bit state only, whose rounding drifts from the linear identity (the
// compile-time side of swd/op_checks.h update_writes_v_sums).
template <typename Rule, typename S>
constexpr bool kSumsStoredState = Rule::kSummedState >= 0 && sizeof(S) == 2;

}  // namespace swd
