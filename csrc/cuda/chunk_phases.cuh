// The device-side pieces every CUDA path is built from, so that the multi-launch path
// (adam_reduce, then an update op) and the single cooperative launch (adam_step) run the very
// same arithmetic in the same order:
//   reduce_chunk     one chunk's sum of (g/scale)^2, and for AMSGradS of max(vmax, v_new)
//   finalize_tensor  one tensor's chunk sums -> its v_sum and its shares of accum
//   sum_shares       the fixed-order sum of every tensor's shares (no float atomics)
//   accum_after      accum with a call's totals added
//   prepare_tensor   one tensor's update scalars (swd/rules.h), and its step advanced
//   update_chunk     one chunk of the element-wise update, for any rule of swd/rules.h;
//                    with 16-bit state, also the sum of the exp_avg_sq it stored
//   store_chunk_v_sum / finalize_v_sum
//                    those sums per chunk -> each tensor's v_sum (swd/rules.h
//                    kSumsStoredState)
// Every sum has a fixed shape: per-thread sums over a fixed index pattern, then a fixed tree,
// and nothing is contracted into FMA (setup.py: -fmad=false), so on one device and build two
// runs (and the two paths) give bitwise equal results. The CPU builds sum in another order
// and contract multiply-adds: they agree with these kernels within the oracle tolerance, not
// bitwise (docs/design.md §6).
//
// Register budget: chunk kernels run kThreads = 512 threads with kMinBlocksPerSm = 2, so
// ptxas caps them at 64 registers; anything live beyond that spills to the stack (local
// memory). tests/test_native_resources.py holds every kernel's stack to a limit.
#pragma once

#include <cuda_runtime.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/tensor_table.cuh"
#include "swd/rules.h"

namespace swd::cuda {

// ---------------------------------------------------------------- loads and stores -------

// Elements per thread step of the reduction: 16 bytes of the param dtype (4 fp32, 8 bf16/fp16,
// 2 fp64). It fixes which elements each thread sums, so it must not change.
template <typename P>
constexpr int pack_width() {
  return static_cast<int>(16 / sizeof(P));
}

// Elements per thread step of the update: 16 bytes of the wider of the param and state dtypes.
// With bf16/fp16 params and fp32 state, 8 elements (32 bytes of each state) held AMSGradS's
// kernels above 64 registers: 8 to 24 bytes of stack. The order of an element-wise update
// does not matter, and the host's alignment check (every list aligned for pack_width<P>()
// elements) covers these smaller packs.
template <typename P, typename S>
constexpr int update_width() {
  return static_cast<int>(16 / (sizeof(P) > sizeof(S) ? sizeof(P) : sizeof(S)));
}

// W consecutive storage values, loaded or stored as one access: the pointer must be aligned to
// the pack (checked on the host per tensor; W = 1 is any element). Values stay in their
// storage type until used, so a 16-bit pack holds two values per register.
template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

template <int W, typename T>
__device__ __forceinline__ Pack<T, W> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, W>*>(p);
}

template <int W, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, W>& pack) {
  *reinterpret_cast<Pack<T, W>*>(p) = pack;
}

// ---------------------------------------------------------------- fixed-order sums -------

// The sum of x over the warp, in lane 0 (a fixed shuffle-down tree).
__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// The sums of x[0], ..., x[K-1] over the block, in x of every thread: each value by the same
// tree (warp_sum, then warp 0 over the warps' totals). All threads must call it.
template <int K>
__device__ __forceinline__ void block_sum(double (&x)[K]) {
  __shared__ double warp_totals[K][kWarps];
  __shared__ double totals[K];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    x[k] = warp_sum(x[k]);
    if (lane == 0) warp_totals[k][warp] = x[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const double y = warp_sum(lane < kWarps ? warp_totals[k][lane] : 0.0);
      if (lane == 0) totals[k] = y;
    }
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) x[k] = totals[k];
  __syncthreads();  // a following call may overwrite the shared values
}

// ---------------------------------------------------------------- chunks -----------------

struct ChunkRange {
  int tensor;      // index in the table
  int64_t start;   // first element of the chunk in that tensor
  int size;        // elements in the chunk, at most kChunk
};

// The tensor holding bucket-wide chunk `chunk`: the last entry whose first chunk is <= chunk
// (empty tensors own no chunk and are skipped by that rule).
__device__ __forceinline__ ChunkRange locate(const TensorTable& t, int32_t chunk) {
  int lo = 0, hi = t.count;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (t.first_chunk[mid] <= chunk) lo = mid; else hi = mid;
  }
  ChunkRange r;
  r.tensor = lo;
  r.start = static_cast<int64_t>(chunk - t.first_chunk[lo]) * kChunk;
  const int64_t left = t.numels[lo] - r.start;
  r.size = static_cast<int>(left < kChunk ? left : kChunk);
  return r;
}

// Step-wide device values of the AMP arguments (null pointers: not given).
struct AmpInputs {
  const float* grad_scale;
  const float* found_inf;
};

// What the reduction needs besides the table: `accum` is the op contract's float64 accumulator
// (swd::AccumIndex); `elements` the element count this call adds.
struct ReduceInputs {
  AmpInputs amp;
  double* accum;
  double beta2;
  double elements;
  bool amsgrad;
};

// A tensor's shares of accum (swd/step_scalars.h): of sum(v_hat), of sum(g^2), of the clip
// term (0 for AMSGradS).
struct TensorShares {
  double v_hat, grad_sq, clip;
};
static_assert(sizeof(TensorShares) == 3 * sizeof(double), "shares are packed doubles");

// Where the reduction keeps its intermediate sums (device memory of one call).
struct ReduceWorkspace {
  double* partials;          // per chunk: the sum of (g/scale)^2, for AMSGradS of the new vmax
  double* grad_sq_partials;  // per chunk, AMSGradS: the sum of (g/scale)^2 (else = partials)
  TensorShares* shares;      // per tensor of the bucket
};

// The float64 elements a reduction's workspace takes: partials per chunk (twice for
// AMSGradS), then the shares of every tensor.
inline int64_t reduce_workspace_doubles(const ChunkLayout& layout, bool amsgrad) {
  constexpr int64_t kShareDoubles = sizeof(TensorShares) / sizeof(double);
  return (amsgrad ? 2 : 1) * static_cast<int64_t>(layout.chunks) + kShareDoubles * layout.tensors;
}

// The workspace of a reduction of `layout` in the reduce_workspace_doubles() at `base`.
inline ReduceWorkspace reduce_workspace(const ChunkLayout& layout, bool amsgrad, double* base) {
  const int64_t chunks = layout.chunks;
  return {base, amsgrad ? base + chunks : base,
          reinterpret_cast<TensorShares*>(base + (amsgrad ? 2 : 1) * chunks)};
}

// What the per-tensor update scalars are formed from: lr (an lr_tensor wins; it is read as
// float32 or float64, whichever it is, so the usual fp32 lr needs no conversion launch), and
// v_bar from accum (null for SGDS, which needs no mean).
struct StepInputs {
  const float* lr_tensor_f32;
  const double* lr_tensor_f64;
  double lr;
  const double* accum;
  const float* found_inf;
};

__device__ __forceinline__ double step_lr(const StepInputs& in) {
  if (in.lr_tensor_f64 != nullptr) return *in.lr_tensor_f64;
  if (in.lr_tensor_f32 != nullptr) return static_cast<double>(*in.lr_tensor_f32);
  return in.lr;
}

__device__ __forceinline__ bool step_skipped(const float* found_inf) {
  return found_inf != nullptr && *found_inf != 0.0f;
}

// How the rules see the grads: divided by grad_scale, or by 1 (exact) when none is given, one
// code path for both. Branching around the divide, as the CPU does, once cost the bf16/fp16
// adam_step kernels 8 more bytes of stack; with the present loops the two forms differ by at
// most 2 registers either way and neither spills (cuobjdump -res-usage, sm_90, CUDA 13.0).
__device__ __forceinline__ swd::GradOptions grad_options(const float* grad_scale,
                                                         bool maximize) {
  return {true, grad_scale != nullptr ? *grad_scale : 1.0f, maximize};
}

// ---------------------------------------------------------------- pass 1 -----------------

// Which table lists the reduction reads: the grad, and for AMSGradS exp_avg_sq and
// max_exp_avg_sq (their positions differ between a reduce table and a full step table).
template <int kGrad, int kExpAvgSq, int kMaxExpAvgSq>
struct ReduceLists {
  static constexpr int grad = kGrad, exp_avg_sq = kExpAvgSq, max_exp_avg_sq = kMaxExpAvgSq;
};

// One chunk's sums, in every thread of the block.
struct ChunkSums {
  double grad_sq;  // of (g/scale)^2
  double vmax;     // AMSGradS: of max(vmax, beta2*v + (1-beta2)*g^2); else 0
};

// One thread's running sums over its elements.
struct ThreadSums {
  float grad_sq = 0.0f;
  float vmax = 0.0f;
};

// Adds element j of W loaded values to a thread's sums.
template <bool kAmsgrad, int W, typename P, typename S>
__device__ __forceinline__ void add_element(ThreadSums& sums, const Pack<P, W>& g,
                                            const Pack<S, W>& v, const Pack<S, W>& vmax, int j,
                                            const swd::GradOptions& unscale,
                                            const swd::SecondMoment& coefficients) {
  const float ge = swd::effective_grad(static_cast<float>(g.v[j]), unscale);
  sums.grad_sq += ge * ge;
  if constexpr (kAmsgrad) {
    sums.vmax += swd::new_max_exp_avg_sq(static_cast<float>(v.v[j]),
                                         static_cast<float>(vmax.v[j]), ge, coefficients);
  }
}

// One chunk's sums. Thread x takes the N-element packs at x*N, x*N + kThreads*N, ... and adds
// their elements in order: whole packs by 16-byte loads where the tensor is aligned, the rest
// (and every pack of an unaligned tensor) element by element, in the same order.
template <typename P, typename S, bool kAmsgrad, typename Lists>
__device__ ChunkSums reduce_chunk(const TensorTable& t, int32_t chunk,
                                  const swd::GradOptions& unscale, double beta2) {
  const swd::SecondMoment coefficients = swd::second_moment_coefficients(beta2);
  constexpr int N = pack_width<P>();
  constexpr int kStride = kThreads * N;
  const ChunkRange r = locate(t, chunk);
  const P* g = static_cast<const P*>(t.lists[Lists::grad][r.tensor]) + r.start;
  const S* v = nullptr;
  const S* vmax = nullptr;
  if constexpr (kAmsgrad) {
    v = static_cast<const S*>(t.lists[Lists::exp_avg_sq][r.tensor]) + r.start;
    vmax = static_cast<const S*>(t.lists[Lists::max_exp_avg_sq][r.tensor]) + r.start;
  }
  ThreadSums sums;
  int pos = threadIdx.x * N;
  if (t.vectorized[r.tensor] != 0) {
#pragma unroll 4  // several independent loads in flight per thread; the add order is unchanged
    for (; pos + N <= r.size; pos += kStride) {
      const Pack<P, N> gp = load_pack<N>(g + pos);
      Pack<S, N> vp{}, mp{};
      if constexpr (kAmsgrad) {
        vp = load_pack<N>(v + pos);
        mp = load_pack<N>(vmax + pos);
      }
#pragma unroll
      for (int j = 0; j < N; ++j) {
        add_element<kAmsgrad>(sums, gp, vp, mp, j, unscale, coefficients);
      }
    }
  }
  for (; pos < r.size; pos += kStride) {
    const int count = r.size - pos < N ? r.size - pos : N;
    for (int j = 0; j < count; ++j) {
      const Pack<P, 1> gp = load_pack<1>(g + pos + j);
      Pack<S, 1> vp{}, mp{};
      if constexpr (kAmsgrad) {
        vp = load_pack<1>(v + pos + j);
        mp = load_pack<1>(vmax + pos + j);
      }
      add_element<kAmsgrad>(sums, gp, vp, mp, 0, unscale, coefficients);
    }
  }
  if constexpr (kAmsgrad) {
    double x[2] = {sums.grad_sq, sums.vmax};
    block_sum(x);
    return {x[0], x[1]};
  } else {
    double x[1] = {sums.grad_sq};
    block_sum(x);
    return {x[0], 0.0};
  }
}

// One chunk's sums into the workspace (by thread 0).
template <bool kAmsgrad>
__device__ __forceinline__ void store_chunk_sums(const ReduceWorkspace& w, int32_t chunk,
                                                 const ChunkSums& sums) {
  if (threadIdx.x != 0) return;
  if constexpr (kAmsgrad) {
    w.partials[chunk] = sums.vmax;
    w.grad_sq_partials[chunk] = sums.grad_sq;
  } else {
    w.partials[chunk] = sums.grad_sq;
  }
}

// One warp: the sum of tensor i's chunk values partials[first_chunk[i] .. first_chunk[i+1]),
// in lane 0 (lane-strided sums, then warp_sum: a fixed order).
__device__ __forceinline__ double tensor_sum(const TensorTable& t, int i,
                                             const double* partials) {
  double s = 0.0;
  for (int32_t c = t.first_chunk[i] + (threadIdx.x & 31); c < t.first_chunk[i + 1]; c += 32) {
    s += partials[c];
  }
  return warp_sum(s);
}

// One warp: tensor i's chunk sums -> its sum S of v (non-amsgrad: swd::updated_v_sum, written
// back unless the step is skipped; AMSGradS: the sum of vmax) and its sum of g^2 -> its
// shares, into w.shares[bucket index].
__device__ __forceinline__ void finalize_tensor(const TensorTable& t, int i,
                                                const ReduceWorkspace& w, double beta2,
                                                bool amsgrad, bool skipped) {
  const double s = tensor_sum(t, i, w.partials);
  const double g2 = amsgrad ? tensor_sum(t, i, w.grad_sq_partials) : 0.0;
  if ((threadIdx.x & 31) != 0) return;
  const float step = *t.steps[i];
  TensorShares shares;
  if (amsgrad) {
    shares.v_hat = swd::v_hat_sum(s, beta2, step);
    shares.grad_sq = g2;
    shares.clip = 0.0;
  } else {
    const double v_sum = swd::updated_v_sum(*t.v_sums[i], s, beta2);
    if (!skipped) *t.v_sums[i] = v_sum;
    shares.v_hat = swd::v_hat_sum(v_sum, beta2, step);
    shares.grad_sq = s;
    shares.clip = swd::clip_term(s, beta2, step);
  }
  w.shares[t.first_tensor + i] = shares;
}

// The fixed-order sums of shares[0, count), in every thread of the block.
__device__ __forceinline__ TensorShares sum_shares(const TensorShares* shares, int64_t count) {
  double x[3] = {0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < count; i += kThreads) {
    x[0] += shares[i].v_hat;
    x[1] += shares[i].grad_sq;
    x[2] += shares[i].clip;
  }
  block_sum(x);
  return {x[0], x[1], x[2]};
}

// accum (read at `accum`) with a call's totals added: the new values of every slot; for
// AMSGradS accum[kClipTerm] stays as it is.
struct AccumValues {
  double v[swd::kAccumSize];
};

__device__ __forceinline__ AccumValues accum_after(const double* accum,
                                                   const TensorShares& totals,
                                                   double elements, bool amsgrad) {
  AccumValues a;
  a.v[swd::kVhatSum] = accum[swd::kVhatSum] + totals.v_hat;
  a.v[swd::kCount] = accum[swd::kCount] + elements;
  a.v[swd::kGradSqSum] = accum[swd::kGradSqSum] + totals.grad_sq;
  a.v[swd::kClipTerm] = amsgrad ? accum[swd::kClipTerm] : accum[swd::kClipTerm] + totals.clip;
  return a;
}

__device__ __forceinline__ void store_accum(double* accum, const AccumValues& a) {
#pragma unroll
  for (int k = 0; k < swd::kAccumSize; ++k) accum[k] = a.v[k];
}

// ---------------------------------------------------------------- pass 2 -----------------

// Tensor i's update scalars into scalars[bucket index]; its step advanced unless skipped.
// One thread per tensor: nothing else reads or writes that step in the same launch phase.
template <typename Rule>
__device__ __forceinline__ void prepare_tensor(const TensorTable& t, int i,
                                               const typename Rule::Hyper& h, double lr,
                                               double v_bar, bool skipped,
                                               typename Rule::Scalars* scalars) {
  float* step = t.steps[i];
  const float before = *step;
  scalars[t.first_tensor + i] = Rule::scalars(h, lr, v_bar, before);
  if (!skipped) *step = before + 1.0f;
}

// Where one thread's next W elements of param, grad and the rule's states are (a rule without
// state keeps a null slot).
template <typename Rule, typename P, typename S>
struct ElementPointers {
  P* param;
  const P* grad;
  S* states[swd::kStateSlots<Rule>];

  // the pointers `n` elements further on
  __device__ __forceinline__ ElementPointers at(int n) const {
    ElementPointers q{param + n, grad + n, {}};
#pragma unroll
    for (int k = 0; k < Rule::kStates; ++k) q.states[k] = states[k] + n;
    return q;
  }
};

// W consecutive elements of param, grad and the rule's states, loaded as packs of W, updated
// by the rule one element at a time, stored. Values stay in storage form until their element
// is updated: for 16-bit storage this halves the registers the loaded packs hold. Returns the
// sum of the summed state's stored values where the rule and S keep one (else 0).
template <typename Rule, int W, typename P, typename S>
__device__ __forceinline__ float update_elements(const ElementPointers<Rule, P, S>& at,
                                                 const typename Rule::Scalars& c,
                                                 const swd::GradOptions& grad) {
  constexpr int K = Rule::kStates;
  constexpr int kSlots = swd::kStateSlots<Rule>;
  constexpr bool kSums = swd::kSumsStoredState<Rule, S>;
  constexpr int kSummed = kSums ? Rule::kSummedState : 0;
  float stored = 0.0f;
  Pack<P, W> pp = load_pack<W>(at.param);
  const Pack<P, W> gp = load_pack<W>(at.grad);
  Pack<S, W> sp[kSlots];
#pragma unroll
  for (int k = 0; k < K; ++k) sp[k] = load_pack<W>(at.states[k]);
#pragma unroll
  for (int j = 0; j < W; ++j) {
    float s[kSlots];
#pragma unroll
    for (int k = 0; k < kSlots; ++k) s[k] = k < K ? static_cast<float>(sp[k].v[j]) : 0.0f;
    float pj = static_cast<float>(pp.v[j]);
    Rule::element(pj, swd::effective_grad(static_cast<float>(gp.v[j]), grad), s, c);
    pp.v[j] = static_cast<P>(pj);
#pragma unroll
    for (int k = 0; k < K; ++k) sp[k].v[j] = static_cast<S>(s[k]);
    if constexpr (kSums) stored += static_cast<float>(sp[kSummed].v[j]);
  }
  store_pack<W>(at.param, pp);
#pragma unroll
  for (int k = 0; k < K; ++k) store_pack<W>(at.states[k], sp[k]);
  return stored;
}

// One chunk of the update: table lists are param, grad, then the rule's states. The elements
// past the last whole pack (all of them for an unaligned tensor) one by one, then the whole
// packs of update_width() elements by vector accesses: in the other order the chunk's size
// stayed live through the pack loop and spilled (AdaiS fp32: 8 bytes of stack). The pack loop
// advances one set of pointers: indexing each list from the chunk's start kept the bases and
// the indexed addresses live together (20 registers for AMSGradS's 5 lists) and spilled. One
// pack per thread at a time (no unrolling): more in flight spilled the half-precision
// kernels, and 512 threads x 2 blocks per SM of 16-byte loads already cover the memory
// latency. Returns this thread's sum of the summed state as stored (update_elements).
template <typename Rule, typename P, typename S>
__device__ float update_chunk(const TensorTable& t, int32_t chunk,
                              const typename Rule::Scalars* scalars,
                              const swd::GradOptions& grad) {
  constexpr int N = update_width<P, S>();
  constexpr int K = Rule::kStates;
  const ChunkRange r = locate(t, chunk);
  const typename Rule::Scalars c = scalars[t.first_tensor + r.tensor];
  ElementPointers<Rule, P, S> chunk_start{static_cast<P*>(t.lists[0][r.tensor]) + r.start,
                                          static_cast<const P*>(t.lists[1][r.tensor]) + r.start,
                                          {}};
#pragma unroll
  for (int k = 0; k < K; ++k) {
    chunk_start.states[k] = static_cast<S*>(t.lists[2 + k][r.tensor]) + r.start;
  }
  const int packed = t.vectorized[r.tensor] != 0 ? r.size / N * N : 0;
  float stored = 0.0f;
#pragma unroll 1
  for (int pos = packed + threadIdx.x; pos < r.size; pos += kThreads) {
    stored += update_elements<Rule, 1>(chunk_start.at(pos), c, grad);
  }
  ElementPointers<Rule, P, S> at = chunk_start.at(threadIdx.x * N);
#pragma unroll 1
  for (int pos = threadIdx.x * N; pos < packed; pos += kThreads * N) {
    stored += update_elements<Rule, N>(at, c, grad);
    at = at.at(kThreads * N);
  }
  return stored;
}

// One chunk's sum of the stored state (every thread's update_chunk result) into
// partials[chunk], by thread 0. All threads must call it.
__device__ __forceinline__ void store_chunk_v_sum(double* partials, int32_t chunk,
                                                  float thread_sum) {
  double x[1] = {thread_sum};
  block_sum(x);
  if (threadIdx.x == 0) partials[chunk] = x[0];
}

// One warp: tensor i's chunk sums of the stored state -> *v_sums[i] (run only when the
// update was not skipped).
__device__ __forceinline__ void finalize_v_sum(const TensorTable& t, int i,
                                               const double* partials) {
  const double s = tensor_sum(t, i, partials);
  if ((threadIdx.x & 31) == 0) *t.v_sums[i] = s;
}

}  // namespace swd::cuda
