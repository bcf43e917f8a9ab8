// The per-element update rules of DESIGN.md §1, shared by the CPU and CUDA kernels so that
// the CPU tests check the very arithmetic the GPU runs. Math is fp32 for every storage dtype;
// per-tensor scalars (bias corrections, decay factors, and 1 - beta: in fp32, 1 - 0.999f is
// off by 1.3e-5 relative, enough to fail the fp32 oracle) are formed once in double.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SWD_HD __host__ __device__ __forceinline__
#else
#define SWD_HD inline
#endif

namespace swd {

// ---------------------------------------------------------------- step-wide scalars ------

// v_bar = sum / count, 0 when nothing was counted. `accum` is the op contract's [sum, count].
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

// ---------------------------------------------------------------- the gradient ------------

// The gradient the rules see: unscaled (GradScaler) and negated under maximize. The user's
// grad tensor is never written.
SWD_HD float effective_grad(float g, float grad_scale, bool maximize) {
  g = g / grad_scale;
  return maximize ? -g : g;
}

// ---------------------------------------------------------------- AdamS / AMSGradS --------

struct AdamScalars {
  float beta1, beta2, eps;
  float one_minus_beta1, one_minus_beta2;
  float decay;        // 1 - lr * wd * decay_scale(v_bar)
  float step_size;    // lr / (1 - beta1^t)
  float sqrt_bc2;     // sqrt(1 - beta2^t)
};

SWD_HD AdamScalars adam_scalars(double lr, double beta1, double beta2, double weight_decay,
                                double eps, double t, double decay_scale_value) {
  AdamScalars s;
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.eps = static_cast<float>(eps);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.decay = static_cast<float>(1.0 - lr * weight_decay * decay_scale_value);
  s.step_size = static_cast<float>(lr / one_minus_pow(beta1, t));
  s.sqrt_bc2 = static_cast<float>(::sqrt(one_minus_pow(beta2, t)));
  return s;
}

// The new second moment; pass 1 of AMSGradS needs it without the rest of the update.
SWD_HD float adam_second_moment(float v, float g, float beta2, float one_minus_beta2) {
  return beta2 * v + one_minus_beta2 * g * g;
}

// One element of AdamS (amsgrad=false) or AMSGradS (amsgrad=true); `g` is effective_grad.
SWD_HD void adam_element(float& p, float g, float& m, float& v, float& vmax,
                         const AdamScalars& s, bool amsgrad) {
  m = m + s.one_minus_beta1 * (g - m);  // lerp, as torch.optim.AdamW forms it
  v = adam_second_moment(v, g, s.beta2, s.one_minus_beta2);
  float v_used = v;
  if (amsgrad) {
    vmax = vmax > v ? vmax : v;
    v_used = vmax;
  }
  const float denom = ::sqrtf(v_used) / s.sqrt_bc2 + s.eps;
  p = p * s.decay - s.step_size * m / denom;
}

// ---------------------------------------------------------------- AdaiS -------------------

struct AdaiScalars {
  float beta0, beta2, eps;
  float one_minus_beta2;
  float decay;        // 1 - lr * wd
  float lr;
  float bc2;          // 1 - beta2^t
  float v_bar;        // global mean of v_hat; 0 means "take v_hat / v_bar as 1"
};

SWD_HD AdaiScalars adai_scalars(double lr, double beta0, double beta2, double weight_decay,
                                double eps, double t, double v_bar) {
  AdaiScalars s;
  s.beta0 = static_cast<float>(beta0);
  s.beta2 = static_cast<float>(beta2);
  s.eps = static_cast<float>(eps);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.decay = static_cast<float>(1.0 - lr * weight_decay);
  s.lr = static_cast<float>(lr);
  s.bc2 = static_cast<float>(one_minus_pow(beta2, t));
  s.v_bar = static_cast<float>(v_bar);
  return s;
}

SWD_HD void adai_element(float& p, float g, float& m, float& v, float& beta1_prod,
                         const AdaiScalars& s) {
  v = adam_second_moment(v, g, s.beta2, s.one_minus_beta2);
  const float ratio = s.v_bar > 0.0f ? (v / s.bc2) / s.v_bar : 1.0f;
  // beta1 = clamp(1 - beta0 * ratio, 0, 1 - eps), formed through 1 - beta1 itself: at the
  // bound 1 - beta1 = eps exactly, where 1 - (1 - eps) in fp32 would be 4.7e-5 off for 1e-3
  float one_minus_beta1 = s.beta0 * ratio;
  one_minus_beta1 = one_minus_beta1 < s.eps ? s.eps : one_minus_beta1;
  one_minus_beta1 = one_minus_beta1 > 1.0f ? 1.0f : one_minus_beta1;
  const float beta1 = 1.0f - one_minus_beta1;
  beta1_prod = beta1_prod * beta1;
  m = beta1 * m + one_minus_beta1 * g;
  p = p * s.decay - s.lr * m / (1.0f - beta1_prod);
}

// ---------------------------------------------------------------- SGDS --------------------

struct SgdScalars {
  float lr, momentum, one_minus_dampening;
  float decay;        // 1 - (1 - dampening) / (1 - momentum) * lr * wd
  bool first;         // the tensor's first step: buf = g
};

SWD_HD SgdScalars sgd_scalars(double lr, double momentum, double dampening, double weight_decay,
                              double step_before) {
  SgdScalars s;
  s.lr = static_cast<float>(lr);
  s.momentum = static_cast<float>(momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - dampening);
  s.decay = static_cast<float>(1.0 - (1.0 - dampening) / (1.0 - momentum) * lr * weight_decay);
  s.first = step_before == 0.0;
  return s;
}

// `buf` is only touched when momentum != 0 (there is no buffer otherwise).
SWD_HD void sgd_element(float& p, float g, float& buf, const SgdScalars& s, bool nesterov) {
  float direction = g;
  if (s.momentum != 0.0f) {
    buf = s.first ? g : s.momentum * buf + s.one_minus_dampening * g;
    direction = nesterov ? g + s.momentum * buf : buf;
  }
  p = p * s.decay - s.lr * direction;
}

}  // namespace swd
