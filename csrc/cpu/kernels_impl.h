// The CPU kernels, written once and compiled once per CPU capability: kernels_default.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp include this file with SWD_CPU_NAMESPACE (and, for
// AVX2 / AVX-512, the at::vec capability macros and the compiler target) set. Do not include
// it anywhere else.
//
// Work split: every tensor of the list is cut into fixed chunks of kChunk elements; the chunk
// list is split into one contiguous share per thread of about equal element count, so small
// tensors (biases, norms) are spread over threads with the big ones, in one parallel region
// per op (AdamW(fused) opens one per tensor).
// Inner loops run the rules of swd/rules.h on at::vec::Vectorized<float>, two float vectors
// per step (one 16-bit vector of bf16/fp16 storage); the tail of each chunk runs the same
// rules on float. The AVX2 and AVX-512 builds contract multiply-adds into FMA instructions
// (g++'s default -ffp-contract=fast; the portable build has no FMA), so the builds agree to
// fp32 rounding, not bitwise (docs/design.md §6).
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
#include "cpu/vec_value_ops.h"
#include "swd/dtype_dispatch.h"
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

// One step of the chunk loops: kElements elements as kValues values of type Value, loaded
// from storage as fp32 and stored back rounded to the storage dtype.
struct VectorStep {  // the vector loop
  using Value = Vec;
  static constexpr int kValues = 2;
  static constexpr int64_t kElements = kStep;
  template <typename T>
  static void load(const T* p, Vec (&out)[kValues]) { Io<T>::load(p, out[0], out[1]); }
  template <typename T>
  static void store(T* p, const Vec (&in)[kValues]) { Io<T>::store(p, in[0], in[1]); }
};
struct ScalarStep {  // the tail of a chunk
  using Value = float;
  static constexpr int kValues = 1;
  static constexpr int64_t kElements = 1;
  template <typename T>
  static void load(const T* p, float (&out)[kValues]) { out[0] = static_cast<float>(*p); }
  template <typename T>
  static void store(T* p, const float (&in)[kValues]) { *p = static_cast<T>(in[0]); }
};

// Every lane of `sum` added to `total` (double), lane by lane.
inline void add_lanes(const Vec& sum, double& total) {
  float lanes[Vec::size()];
  sum.store(lanes);
  for (float lane : lanes) total += lane;
}

// Sums of many fp32 terms are taken in fp32 over blocks of this many elements, each block's
// total added to a double (tests/tolerance.py bounds the error from it).
constexpr int64_t kSumBlock = 1024;
static_assert(kSumBlock % kStep == 0, "sum blocks hold whole vector steps");

// ---------------------------------------------------------------- work split -------------

struct Chunk {
  int64_t tensor, begin, end;
};

// The chunks of a list and the thread shares over them: one contiguous run of chunks per
// thread, of about equal element count.
struct ChunkLayout {
  std::vector<Chunk> chunks;
  std::vector<int64_t> share_begin;  // share s covers chunks [share_begin[s], share_begin[s+1])

  template <typename TensorT>
  ChunkLayout(const TensorT* tensors, int64_t count) {
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

// The sums of one chunk: of grad^2 (grads not unscaled) and, for AMSGradS, of the new vmax.
struct ChunkSums {
  double grad_sq = 0.0;
  double vmax = 0.0;
};

// Float vector accumulators over blocks of kBlock elements, each block added to a double.
template <typename P, typename S, bool kAmsgrad>
ChunkSums reduce_chunk(const ReduceCall& a, const ReduceTensor& t, int64_t begin, int64_t end) {
  constexpr int64_t kBlock = kSumBlock;
  const P* g = static_cast<const P*>(t.grad);
  const S* v = static_cast<const S*>(t.exp_avg_sq);
  const S* vmax = static_cast<const S*>(t.max_exp_avg_sq);
  const GradOptions unscale{a.grad.scaled, a.grad.grad_scale, false};
  const SecondMoment coefficients = a.second_moment;
  ChunkSums total;
  int64_t i = begin;
  if constexpr (!kAmsgrad) {
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
      add_lanes(sum, total.grad_sq);
    }
    i = begin + kStreams * part;
  }
  while (i + kStep <= end) {
    const int64_t block_end = std::min(end, i + kBlock);
    Vec sq_lo(0.0f), sq_hi(0.0f), vmax_lo(0.0f), vmax_hi(0.0f);
    for (; i + kStep <= block_end; i += kStep) {
      Vec g_lo, g_hi;
      Io<P>::load(g + i, g_lo, g_hi);
      sq_lo = sq_lo + g_lo * g_lo;
      sq_hi = sq_hi + g_hi * g_hi;
      if constexpr (kAmsgrad) {
        Vec v_lo, v_hi, m_lo, m_hi;
        Io<S>::load(v + i, v_lo, v_hi);
        Io<S>::load(vmax + i, m_lo, m_hi);
        g_lo = swd::effective_grad(g_lo, unscale);
        g_hi = swd::effective_grad(g_hi, unscale);
        vmax_lo = vmax_lo + swd::new_max_exp_avg_sq(v_lo, m_lo, g_lo, coefficients);
        vmax_hi = vmax_hi + swd::new_max_exp_avg_sq(v_hi, m_hi, g_hi, coefficients);
      }
    }
    add_lanes(sq_lo + sq_hi, total.grad_sq);
    if constexpr (kAmsgrad) add_lanes(vmax_lo + vmax_hi, total.vmax);
  }
  for (; i < end; ++i) {
    const float gi = static_cast<float>(g[i]);
    total.grad_sq += gi * gi;
    if constexpr (kAmsgrad) {
      total.vmax += swd::new_max_exp_avg_sq(static_cast<float>(v[i]), static_cast<float>(vmax[i]),
                                            swd::effective_grad(gi, unscale), coefficients);
    }
  }
  return total;
}

void adam_reduce(const ReduceCall& a, double* grad_sq_sums, double* vmax_sums) {
  ChunkLayout layout(a.tensors, a.count);
  std::vector<ChunkSums> partials(layout.chunks.size());
  CpuDtypePairs::dispatch(a.param_dtype, a.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    layout.run([&](int64_t c, const Chunk& chunk) {
      const ReduceTensor& t = a.tensors[chunk.tensor];
      partials[c] = a.amsgrad ? reduce_chunk<P, S, true>(a, t, chunk.begin, chunk.end)
                              : reduce_chunk<P, S, false>(a, t, chunk.begin, chunk.end);
    });
  });
  std::fill(grad_sq_sums, grad_sq_sums + a.count, 0.0);
  if (a.amsgrad) std::fill(vmax_sums, vmax_sums + a.count, 0.0);
  for (size_t c = 0; c < layout.chunks.size(); ++c) {
    grad_sq_sums[layout.chunks[c].tensor] += partials[c].grad_sq;
    if (a.amsgrad) vmax_sums[layout.chunks[c].tensor] += partials[c].vmax;
  }
}

// ---------------------------------------------------------------- updates ---------------

// Elements [i, i + Step::kElements) of one tensor: load param, grad and the rule's states,
// apply the rule, store. Forced inline: g++ 12 left 39 of its 45 vector instantiations out of
// line in the AVX-512 build, a call per vector step that reloads and broadcasts every scalar.
template <typename Step, typename Rule, typename P, typename S>
inline __attribute__((always_inline)) void update_step(
    P* p, const P* g, S* const (&states)[kStateSlots<Rule>],
    const typename Rule::Scalars& scalars, const GradOptions& grad, int64_t i) {
  using V = typename Step::Value;
  constexpr int kStates = Rule::kStates;
  constexpr int kValues = Step::kValues;
  V pv[kValues], gv[kValues], sv[kStateSlots<Rule>][kValues];
  Step::load(p + i, pv);
  Step::load(g + i, gv);
  for (int k = 0; k < kStates; ++k) Step::load(states[k] + i, sv[k]);
  for (int j = 0; j < kValues; ++j) {
    V state[kStateSlots<Rule>];
    for (int k = 0; k < kStates; ++k) state[k] = sv[k][j];
    Rule::element(pv[j], swd::effective_grad(gv[j], grad), state, scalars);
    for (int k = 0; k < kStates; ++k) sv[k][j] = state[k];
  }
  Step::store(p + i, pv);
  for (int k = 0; k < kStates; ++k) Step::store(states[k] + i, sv[k]);
}

// Elements [begin, end) of one tensor: vector steps, then the tail one element at a time.
// Returns the sum of the rule's summed state as stored, where the rule and S keep one
// (swd/rules.h kSumsStoredState; else 0): read back after the store, so it is the rounded
// value the next step reads, summed in fp32 over blocks of kSumBlock elements.
// Kept out of line: ChunkLayout::run calls it from two places (one thread, or the pool), and
// inlined there every rule's loops would be compiled twice.
template <typename Rule, typename P, typename S>
__attribute__((noinline)) double update_chunk(const UpdateTensor<Rule>& t,
                                              const GradOptions grad, int64_t begin,
                                              int64_t end) {
  constexpr bool kSums = kSumsStoredState<Rule, S>;
  // Local copies: the float stores through the tensors' pointers may alias the table's float
  // scalars, so read through `t` they are reloaded after every store (the AVX-512 AdamS loop
  // then broadcast 7 scalars from memory every vector step).
  const typename Rule::Scalars scalars = t.scalars;
  P* const p = static_cast<P*>(t.param);
  const P* const g = static_cast<const P*>(t.grad);
  S* states[kStateSlots<Rule>];
  for (int k = 0; k < kStateSlots<Rule>; ++k) states[k] = static_cast<S*>(t.states[k]);
  const S* const summed = kSums ? states[kSums ? Rule::kSummedState : 0] : nullptr;
  double stored_sum = 0.0;
  int64_t i = begin;
  while (i + VectorStep::kElements <= end) {
    const int64_t block_end = std::min(end, i + kSumBlock);
    Vec block_sum(0.0f);
    for (; i + VectorStep::kElements <= block_end; i += VectorStep::kElements) {
      update_step<VectorStep, Rule>(p, g, states, scalars, grad, i);
      if constexpr (kSums) {
        Vec lo, hi;
        Io<S>::load(summed + i, lo, hi);
        block_sum = block_sum + lo;
        block_sum = block_sum + hi;
      }
    }
    if constexpr (kSums) add_lanes(block_sum, stored_sum);
  }
  for (; i < end; ++i) {
    update_step<ScalarStep, Rule>(p, g, states, scalars, grad, i);
    if constexpr (kSums) stored_sum += static_cast<float>(summed[i]);
  }
  return stored_sum;
}

template <typename Rule>
void update(const UpdateCall<Rule>& call) {
  ChunkLayout layout(call.tensors, call.count);
  std::vector<double> partials(call.stored_sums != nullptr ? layout.chunks.size() : 0);
  CpuDtypePairs::dispatch(call.param_dtype, call.state_dtype, [&](auto p, auto s) {
    using P = typename decltype(p)::type;
    using S = typename decltype(s)::type;
    layout.run([&](int64_t index, const Chunk& c) {
      const double stored = update_chunk<Rule, P, S>(call.tensors[c.tensor], call.grad,
                                                     c.begin, c.end);
      if (!partials.empty()) partials[index] = stored;
    });
  });
  if (call.stored_sums == nullptr) return;
  std::fill(call.stored_sums, call.stored_sums + call.count, 0.0);
  for (size_t c = 0; c < layout.chunks.size(); ++c) {
    call.stored_sums[layout.chunks[c].tensor] += partials[c];
  }
}

// This build's update kernel of every rule in kernels.h's table.
template <typename... Rules>
UpdateKernels<Rules...> update_kernels(const UpdateKernels<Rules...>&) {
  return {{&update<Rules>...}};
}

}  // namespace

const Kernels& kernels() {
  static const Kernels table{SWD_CPU_CAPABILITY_NAME, adam_reduce,
                             update_kernels(CpuUpdateKernels{})};
  return table;
}

}  // namespace swd::cpu::SWD_CPU_NAMESPACE
