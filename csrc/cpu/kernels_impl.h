// The CPU kernels, written once and compiled once per CPU capability: kernels_default.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp include this file with SWD_CPU_NAMESPACE (and, for
// AVX2 / AVX-512, the at::vec capability macros and the compiler target) set. Do not include
// it anywhere else.
//
// Work split: every tensor of the list is cut into fixed chunks of kChunk elements; the chunk
// list is split into one contiguous share per thread of about equal element count, so small
// tensors (biases, norms) are spread over threads with the big ones, in one parallel region
// per op (AdamW(fused) opens one per tensor).
// Inner loops run on at::vec::Vectorized<float>, two float vectors per step (one 16-bit vector
// of bf16/fp16 storage), with the operations of swd/rules.h in the same order; the tail of
// each chunk calls the rules.h functions themselves. (Where FMA is available g++ may fuse a
// multiply-add, so builds agree to fp32 rounding, not bitwise.)
#ifndef SWD_CPU_NAMESPACE
#error "define SWD_CPU_NAMESPACE before including kernels_impl.h"
#endif

#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cpu/kernels.h"
#include "swd/rules.h"

namespace swd::cpu::SWD_CPU_NAMESPACE {
namespace {

using Vec = at::vec::Vectorized<float>;
// Elements per vector step: two float vectors, i.e. one vector of 16-bit storage.
constexpr int64_t kStep = 2 * Vec::size();
// Elements per work chunk. Also fixes the reduction's partial sums (the order of the final
// sum), so results do not depend on the thread count.
constexpr int64_t kChunk = 16384;
// Lists below this many elements run on the calling thread: waking the pool costs more.
constexpr int64_t kSerialBelow = 32768;

// ---------------------------------------------------------------- storage <-> fp32 -------

template <typename T>
struct Io {  // bf16 / fp16: one 16-bit vector holds the two float vectors of a step
  static void load(const T* p, Vec& lo, Vec& hi) {
    auto both = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p));
    lo = std::get<0>(both);
    hi = std::get<1>(both);
  }
  static void store(T* p, const Vec& lo, const Vec& hi) {
    at::vec::convert_from_float<T>(lo, hi).store(p);
  }
};
template <>
struct Io<float> {
  static void load(const float* p, Vec& lo, Vec& hi) {
    lo = Vec::loadu(p);
    hi = Vec::loadu(p + Vec::size());
  }
  static void store(float* p, const Vec& lo, const Vec& hi) {
    lo.store(p);
    hi.store(p + Vec::size());
  }
};

template <typename T>
inline float to_float(T x) { return static_cast<float>(x); }
template <typename T>
inline T from_float(float x) { return static_cast<T>(x); }

// The effective gradient (rules.h effective_grad) on a vector.
inline Vec effective_grad(Vec g, GradOptions o) {
  if (o.scaled) g = g / Vec(o.grad_scale);
  return o.maximize ? g.neg() : g;
}

// ---------------------------------------------------------------- dtype dispatch ---------

template <typename T>
struct Type { using type = T; };

template <typename P, typename F>
void dispatch_state(Dtype state, F&& f) {
  switch (state) {
    case Dtype::kFloat: return f(Type<P>{}, Type<float>{});
    case Dtype::kBFloat16: return f(Type<P>{}, Type<c10::BFloat16>{});
    case Dtype::kHalf: return f(Type<P>{}, Type<c10::Half>{});
  }
}

// Calls f(Type<ParamT>, Type<StateT>) for the storage dtypes.
template <typename F>
void dispatch_dtypes(Dtype param, Dtype state, F&& f) {
  switch (param) {
    case Dtype::kFloat: return dispatch_state<float>(state, f);
    case Dtype::kBFloat16: return dispatch_state<c10::BFloat16>(state, f);
    case Dtype::kHalf: return dispatch_state<c10::Half>(state, f);
  }
}

// ---------------------------------------------------------------- work split -------------

struct Chunk {
  int64_t tensor, begin, end;
};

// The chunks of a list and the thread shares over them: one contiguous run of chunks per
// thread, of about equal element count.
struct WorkPlan {
  std::vector<Chunk> chunks;
  std::vector<int64_t> share_begin;  // share s covers chunks [share_begin[s], share_begin[s+1])

  template <typename TensorT>
  WorkPlan(const TensorT* tensors, int64_t count) {
    int64_t total = 0;
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t b = 0; b < tensors[i].numel; b += kChunk) {
        chunks.push_back({i, b, std::min(tensors[i].numel, b + kChunk)});
      }
      total += tensors[i].numel;
    }
    const int64_t threads = total < kSerialBelow ? 1 : at::get_num_threads();
    const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(threads, chunks.size()));
    share_begin.assign(shares + 1, static_cast<int64_t>(chunks.size()));
    // share s starts at the first chunk that starts at or after s/shares of the elements
    int64_t share = 0, seen = 0;
    for (int64_t c = 0; c < static_cast<int64_t>(chunks.size()) && share < shares; ++c) {
      while (share < shares && seen >= total * share / shares) share_begin[share++] = c;
      seen += chunks[c].end - chunks[c].begin;
    }
    share_begin[0] = 0;
  }

  int64_t shares() const { return static_cast<int64_t>(share_begin.size()) - 1; }

  // f(chunk index, chunk) for every chunk, each thread walking its share in order.
  // (Measured: walking the reduction backwards so that the update starts on grads still in
  // cache did not help; hardware prefetch favours forward streams.)
  template <typename F>
  void run(F&& f) const {
    auto run_shares = [&](int64_t first, int64_t last) {
      for (int64_t s = first; s < last; ++s) {
        for (int64_t c = share_begin[s]; c < share_begin[s + 1]; ++c) f(c, chunks[c]);
      }
    };
    if (shares() == 1) {
      run_shares(0, 1);
    } else {
      at::parallel_for(0, shares(), 1, run_shares);
    }
  }
};

// ---------------------------------------------------------------- adam_reduce -----------

// Sum of one chunk: grad^2 (non-amsgrad) or the new vmax (amsgrad), in float vector
// accumulators over blocks of kBlock elements, each block added to a double.
template <typename P, typename S, bool kAmsgrad>
double reduce_chunk(const AdamReduce& a, const ReduceTensor& t, int64_t begin, int64_t end) {
  constexpr int64_t kBlock = 1024;
  static_assert(kBlock % kStep == 0, "blocks hold whole vector steps");
  const P* g = static_cast<const P*>(t.grad);
  const S* v = static_cast<const S*>(t.exp_avg_sq);
  const S* vmax = static_cast<const S*>(t.max_exp_avg_sq);
  const GradOptions unscale{a.grad.scaled, a.grad.grad_scale, false};
  const Vec beta2(a.beta2), one_minus_beta2(a.one_minus_beta2);
  double total = 0.0;
  int64_t i = begin;
  if (!kAmsgrad) {
    // grad^2 over kStreams equal parts of the chunk in lockstep: several read streams keep
    // more memory requests in flight than one (measured: 1 stream 3.1 ms, 2 or 4 streams 2.7 ms
    // for 100 MB of fp32 grads on one Zen 4 core; torch.sum of one flat tensor 2.3 ms)
    constexpr int64_t kStreams = 2;
    const int64_t part = (end - begin) / (kStreams * kBlock) * kBlock;
    for (; i < begin + part; i += kBlock) {
      Vec acc[kStreams];
      for (int64_t k = 0; k < kStreams; ++k) acc[k] = Vec(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kStep) {
        for (int64_t k = 0; k < kStreams; ++k) {
          Vec lo, hi;
          Io<P>::load(g + j + k * part, lo, hi);
          acc[k] = acc[k] + lo * lo;
          acc[k] = acc[k] + hi * hi;
        }
      }
      Vec sum = acc[0];
      for (int64_t k = 1; k < kStreams; ++k) sum = sum + acc[k];
      float lanes[Vec::size()];
      sum.store(lanes);
      for (float lane : lanes) total += lane;
    }
    i = begin + kStreams * part;
  }
  while (i + kStep <= end) {
    const int64_t block_end = std::min(end, i + kBlock);
    Vec acc_lo(0.0f), acc_hi(0.0f);
    for (; i + kStep <= block_end; i += kStep) {
      Vec g_lo, g_hi;
      Io<P>::load(g + i, g_lo, g_hi);
      if (!kAmsgrad) {
        acc_lo = acc_lo + g_lo * g_lo;
        acc_hi = acc_hi + g_hi * g_hi;
        continue;
      }
      g_lo = effective_grad(g_lo, unscale);
      g_hi = effective_grad(g_hi, unscale);
      Vec v_lo, v_hi, m_lo, m_hi;
      Io<S>::load(v + i, v_lo, v_hi);
      Io<S>::load(vmax + i, m_lo, m_hi);
      v_lo = beta2 * v_lo + one_minus_beta2 * g_lo * g_lo;
      v_hi = beta2 * v_hi + one_minus_beta2 * g_hi * g_hi;
      acc_lo = acc_lo + Vec::blendv(v_lo, m_lo, m_lo > v_lo);
      acc_hi = acc_hi + Vec::blendv(v_hi, m_hi, m_hi > v_hi);
    }
    float lanes[Vec::size()];
    (acc_lo + acc_hi).store(lanes);
    for (float lane : lanes) total += lane;
  }
  for (; i < end; ++i) {
    if (!kAmsgrad) {
      const float gi = to_float(g[i]);
      total += gi * gi;
      continue;
    }
    const float gi = swd::effective_grad(to_float(g[i]), unscale.grad_scale, false);
    const float vi = swd::adam_second_moment(to_float(v[i]), gi, a.beta2, a.one_minus_beta2);
    const float mi = to_float(vmax[i]);
    total += mi > vi ? mi : vi;
  }
  return total;
}

void adam_reduce(const AdamReduce& a, double* sums) {
  WorkPlan plan(a.tensors, a.count);
  std::vector<double> partials(plan.chunks.size());
  dispatch_dtypes(a.param_dtype, a.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    plan.run([&](int64_t c, const Chunk& chunk) {
      const ReduceTensor& t = a.tensors[chunk.tensor];
      partials[c] = a.amsgrad ? reduce_chunk<P, S, true>(a, t, chunk.begin, chunk.end)
                              : reduce_chunk<P, S, false>(a, t, chunk.begin, chunk.end);
    });
  });
  std::fill(sums, sums + a.count, 0.0);
  for (size_t c = 0; c < plan.chunks.size(); ++c) sums[plan.chunks[c].tensor] += partials[c];
}

// ---------------------------------------------------------------- adam_update -----------

template <typename P, typename S, bool kAmsgrad>
void adam_chunk(const AdamUpdate& a, const AdamTensor& t, int64_t begin, int64_t end) {
  P* p = static_cast<P*>(t.param);
  const P* g = static_cast<const P*>(t.grad);
  S* m = static_cast<S*>(t.exp_avg);
  S* v = static_cast<S*>(t.exp_avg_sq);
  S* vmax = static_cast<S*>(t.max_exp_avg_sq);
  const AdamScalars s = t.scalars;
  const GradOptions grad = a.grad;
  const Vec one_minus_beta1(s.one_minus_beta1), beta2(s.beta2);
  const Vec one_minus_beta2(s.one_minus_beta2);
  const Vec eps(s.eps), decay(s.decay), step_size(s.step_size), sqrt_bc2(s.sqrt_bc2);
  // the rules of swd::adam_element on one float vector
  auto element = [&](Vec& pv, Vec gv, Vec& mv, Vec& vv, Vec& vmaxv) {
    mv = mv + one_minus_beta1 * (gv - mv);
    vv = beta2 * vv + one_minus_beta2 * gv * gv;
    Vec v_used = vv;
    if (kAmsgrad) {
      vmaxv = Vec::blendv(vv, vmaxv, vmaxv > vv);
      v_used = vmaxv;
    }
    const Vec denom = v_used.sqrt() / sqrt_bc2 + eps;
    pv = pv * decay - step_size * mv / denom;
  };
  int64_t i = begin;
  for (; i + kStep <= end; i += kStep) {
    Vec p_lo, p_hi, g_lo, g_hi, m_lo, m_hi, v_lo, v_hi, x_lo, x_hi;
    Io<P>::load(p + i, p_lo, p_hi);
    Io<P>::load(g + i, g_lo, g_hi);
    Io<S>::load(m + i, m_lo, m_hi);
    Io<S>::load(v + i, v_lo, v_hi);
    if (kAmsgrad) Io<S>::load(vmax + i, x_lo, x_hi);
    element(p_lo, effective_grad(g_lo, grad), m_lo, v_lo, x_lo);
    element(p_hi, effective_grad(g_hi, grad), m_hi, v_hi, x_hi);
    Io<P>::store(p + i, p_lo, p_hi);
    Io<S>::store(m + i, m_lo, m_hi);
    Io<S>::store(v + i, v_lo, v_hi);
    if (kAmsgrad) Io<S>::store(vmax + i, x_lo, x_hi);
  }
  for (; i < end; ++i) {
    float pi = to_float(p[i]), mi = to_float(m[i]), vi = to_float(v[i]);
    float xi = kAmsgrad ? to_float(vmax[i]) : 0.0f;
    const float gi = swd::effective_grad(to_float(g[i]), grad.grad_scale, grad.maximize);
    swd::adam_element(pi, gi, mi, vi, xi, s, kAmsgrad);
    p[i] = from_float<P>(pi);
    m[i] = from_float<S>(mi);
    v[i] = from_float<S>(vi);
    if (kAmsgrad) vmax[i] = from_float<S>(xi);
  }
}

void adam_update(const AdamUpdate& a) {
  WorkPlan plan(a.tensors, a.count);
  dispatch_dtypes(a.param_dtype, a.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    plan.run([&](int64_t, const Chunk& c) {
      if (a.amsgrad) {
        adam_chunk<P, S, true>(a, a.tensors[c.tensor], c.begin, c.end);
      } else {
        adam_chunk<P, S, false>(a, a.tensors[c.tensor], c.begin, c.end);
      }
    });
  });
}

// ---------------------------------------------------------------- adai_update -----------

template <typename P, typename S>
void adai_chunk(const AdaiUpdate& a, const AdaiTensor& t, int64_t begin, int64_t end) {
  P* p = static_cast<P*>(t.param);
  const P* g = static_cast<const P*>(t.grad);
  S* m = static_cast<S*>(t.exp_avg);
  S* v = static_cast<S*>(t.exp_avg_sq);
  S* prod = static_cast<S*>(t.beta1_prod);
  const AdaiScalars s = t.scalars;
  const GradOptions grad = a.grad;
  const Vec one(1.0f), beta0(s.beta0), beta2(s.beta2);
  const Vec one_minus_beta2(s.one_minus_beta2), eps(s.eps);
  const Vec decay(s.decay), lr(s.lr), bc2(s.bc2), v_bar(s.v_bar);
  // the rules of swd::adai_element on one float vector
  auto element = [&](Vec& pv, Vec gv, Vec& mv, Vec& vv, Vec& prodv) {
    vv = beta2 * vv + one_minus_beta2 * gv * gv;
    const Vec ratio = s.v_bar > 0.0f ? (vv / bc2) / v_bar : one;
    Vec one_minus_beta1 = beta0 * ratio;
    one_minus_beta1 = Vec::blendv(one_minus_beta1, eps, one_minus_beta1 < eps);
    one_minus_beta1 = Vec::blendv(one_minus_beta1, one, one_minus_beta1 > one);
    const Vec beta1 = one - one_minus_beta1;
    prodv = prodv * beta1;
    mv = beta1 * mv + one_minus_beta1 * gv;
    pv = pv * decay - lr * mv / (one - prodv);
  };
  int64_t i = begin;
  for (; i + kStep <= end; i += kStep) {
    Vec p_lo, p_hi, g_lo, g_hi, m_lo, m_hi, v_lo, v_hi, b_lo, b_hi;
    Io<P>::load(p + i, p_lo, p_hi);
    Io<P>::load(g + i, g_lo, g_hi);
    Io<S>::load(m + i, m_lo, m_hi);
    Io<S>::load(v + i, v_lo, v_hi);
    Io<S>::load(prod + i, b_lo, b_hi);
    element(p_lo, effective_grad(g_lo, grad), m_lo, v_lo, b_lo);
    element(p_hi, effective_grad(g_hi, grad), m_hi, v_hi, b_hi);
    Io<P>::store(p + i, p_lo, p_hi);
    Io<S>::store(m + i, m_lo, m_hi);
    Io<S>::store(v + i, v_lo, v_hi);
    Io<S>::store(prod + i, b_lo, b_hi);
  }
  for (; i < end; ++i) {
    float pi = to_float(p[i]), mi = to_float(m[i]), vi = to_float(v[i]);
    float bi = to_float(prod[i]);
    const float gi = swd::effective_grad(to_float(g[i]), grad.grad_scale, grad.maximize);
    swd::adai_element(pi, gi, mi, vi, bi, s);
    p[i] = from_float<P>(pi);
    m[i] = from_float<S>(mi);
    v[i] = from_float<S>(vi);
    prod[i] = from_float<S>(bi);
  }
}

void adai_update(const AdaiUpdate& a) {
  WorkPlan plan(a.tensors, a.count);
  dispatch_dtypes(a.param_dtype, a.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    plan.run([&](int64_t, const Chunk& c) {
      adai_chunk<P, S>(a, a.tensors[c.tensor], c.begin, c.end);
    });
  });
}

// ---------------------------------------------------------------- sgd_update ------------

template <typename P, typename S>
void sgd_chunk(const SgdUpdate& a, const SgdTensor& t, int64_t begin, int64_t end) {
  P* p = static_cast<P*>(t.param);
  const P* g = static_cast<const P*>(t.grad);
  S* buf = static_cast<S*>(t.momentum_buffer);
  const SgdScalars s = t.scalars;
  const GradOptions grad = a.grad;
  const bool nesterov = a.nesterov;
  const bool has_momentum = s.momentum != 0.0f;
  const Vec lr(s.lr), momentum(s.momentum), one_minus_dampening(s.one_minus_dampening);
  const Vec decay(s.decay);
  // the rules of swd::sgd_element on one float vector
  auto element = [&](Vec& pv, Vec gv, Vec& bufv) {
    Vec direction = gv;
    if (has_momentum) {
      bufv = s.first ? gv : momentum * bufv + one_minus_dampening * gv;
      direction = nesterov ? gv + momentum * bufv : bufv;
    }
    pv = pv * decay - lr * direction;
  };
  const bool reads_buf = has_momentum && !s.first;
  int64_t i = begin;
  for (; i + kStep <= end; i += kStep) {
    Vec p_lo, p_hi, g_lo, g_hi, b_lo, b_hi;
    Io<P>::load(p + i, p_lo, p_hi);
    Io<P>::load(g + i, g_lo, g_hi);
    if (reads_buf) Io<S>::load(buf + i, b_lo, b_hi);
    element(p_lo, effective_grad(g_lo, grad), b_lo);
    element(p_hi, effective_grad(g_hi, grad), b_hi);
    Io<P>::store(p + i, p_lo, p_hi);
    if (has_momentum) Io<S>::store(buf + i, b_lo, b_hi);
  }
  for (; i < end; ++i) {
    float pi = to_float(p[i]);
    float bi = reads_buf ? to_float(buf[i]) : 0.0f;
    const float gi = swd::effective_grad(to_float(g[i]), grad.grad_scale, grad.maximize);
    swd::sgd_element(pi, gi, bi, s, nesterov);
    p[i] = from_float<P>(pi);
    if (has_momentum) buf[i] = from_float<S>(bi);
  }
}

void sgd_update(const SgdUpdate& a) {
  WorkPlan plan(a.tensors, a.count);
  dispatch_dtypes(a.param_dtype, a.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    plan.run([&](int64_t, const Chunk& c) {
      sgd_chunk<P, S>(a, a.tensors[c.tensor], c.begin, c.end);
    });
  });
}

}  // namespace

const Kernels& kernels() {
  static const Kernels table{SWD_CPU_CAPABILITY_NAME, adam_reduce, adam_update, adai_update,
                             sgd_update};
  return table;
}

}  // namespace swd::cpu::SWD_CPU_NAMESPACE
