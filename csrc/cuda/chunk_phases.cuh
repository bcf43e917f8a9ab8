// The device-side pieces every CUDA path is built from, so that the multi-launch path
// (adam_reduce, then an update op) and the single cooperative launch (adam_step) run the very
// same arithmetic in the same order:
//   reduce_chunk     one chunk's sum of (g/scale)^2, or of max(vmax, v_new) for AMSGradS
//   finalize_tensor  one tensor's chunk sums -> its v_sum and its share of sum(v_hat)
//   sum_shares       the fixed-order sum of every tensor's share (no float atomics)
//   prepare_tensor   one tensor's update scalars (swd/rules.h), and its step advanced
//   update_chunk     one chunk of the element-wise update, for any rule of swd/rules.h
// Every sum has a fixed shape: per-thread sums over a fixed index pattern, then a fixed tree,
// so two runs (or the two paths) give bitwise equal results.
#pragma once

#include <cuda_runtime.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/tensor_table.cuh"
#include "swd/rules.h"

namespace swd::cuda {

// ---------------------------------------------------------------- loads and stores -------

// Elements per thread step: 16 bytes of the param dtype (4 fp32, 8 bf16/fp16, 2 fp64).
template <typename P>
constexpr int pack_width() {
  return static_cast<int>(16 / sizeof(P));
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// N elements from p as float; only the first `left` when fewer remain (the rest read as 0).
// The vector load needs the pointer aligned to the pack (checked on the host per tensor).
template <int N, typename T>
__device__ __forceinline__ void load_pack(const T* p, int64_t left, bool vectorized,
                                          float (&out)[N]) {
  if (vectorized && left >= N) {
    const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = static_cast<float>(pack.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = j < left ? static_cast<float>(p[j]) : 0.0f;
  }
}

template <int N, typename T>
__device__ __forceinline__ void store_pack(T* p, int64_t left, bool vectorized,
                                           const float (&in)[N]) {
  if (vectorized && left >= N) {
    Pack<T, N> pack;
#pragma unroll
    for (int j = 0; j < N; ++j) pack.v[j] = static_cast<T>(in[j]);
    *reinterpret_cast<Pack<T, N>*>(p) = pack;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (j < left) p[j] = static_cast<T>(in[j]);
    }
  }
}

// ---------------------------------------------------------------- fixed-order sums -------

// The sum of x over the warp, in lane 0 (a fixed shuffle-down tree).
__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

// The sum of x over the block, returned to every thread. All threads must call it.
__device__ __forceinline__ double block_sum(double x) {
  __shared__ double warp_totals[kWarps];
  __shared__ double total;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  x = warp_sum(x);
  if (lane == 0) warp_totals[warp] = x;
  __syncthreads();
  if (warp == 0) {
    double y = lane < kWarps ? warp_totals[lane] : 0.0;
    y = warp_sum(y);
    if (lane == 0) total = y;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();  // a following call may overwrite the shared values
  return result;
}

// ---------------------------------------------------------------- chunks -----------------

struct ChunkRange {
  int tensor;      // index in the table
  int64_t start;   // first element of the chunk in that tensor
  int64_t size;    // elements in the chunk
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
  r.size = left < kChunk ? left : kChunk;
  return r;
}

// Step-wide device values of the AMP arguments (null pointers: not given).
struct AmpInputs {
  const float* grad_scale;
  const float* found_inf;
};

// What the reduction needs besides the table: `accum` is the op contract's float64
// [sum of v_hat, element count]; `elements` the element count this call adds.
struct ReduceInputs {
  AmpInputs amp;
  double* accum;
  double beta2;
  double elements;
  bool amsgrad;
};

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

// How the rules see the grads, read once per kernel: divided by grad_scale, or by 1 when none
// is given. Branching around the divide instead (as the CPU does) raised the stack of the
// bf16/fp16 adam_step kernels from 40 to 48 and 88 to 96 bytes (cuobjdump -res-usage, sm_90).
__device__ __forceinline__ swd::GradOptions grad_options(const float* grad_scale,
                                                         bool maximize) {
  return {true, grad_scale != nullptr ? *grad_scale : 1.0f, maximize};
}

// The update kernels' flags. A struct, not a bare bool kernel parameter: with `const bool`
// ptxas gave update_kernel<AdamRule<true>, float, float> 64 registers and a 16-byte stack
// instead of 56 and none (sm_90, CUDA 13.0).
struct UpdateFlags {
  bool maximize;
};

// ---------------------------------------------------------------- pass 1 -----------------

// Which table lists the reduction reads: the grad, and for AMSGradS exp_avg_sq and
// max_exp_avg_sq (their positions differ between a reduce table and a full step table).
template <int kGrad, int kExpAvgSq, int kMaxExpAvgSq>
struct ReduceLists {
  static constexpr int grad = kGrad, exp_avg_sq = kExpAvgSq, max_exp_avg_sq = kMaxExpAvgSq;
};

// One chunk's sum: of (g/scale)^2, or for AMSGradS of max(vmax, beta2*v + (1-beta2)*g^2).
// Returned to every thread of the block.
template <typename P, typename S, bool kAmsgrad, typename Lists>
__device__ double reduce_chunk(const TensorTable& t, int32_t chunk,
                               const swd::GradOptions& unscale, double beta2) {
  const swd::SecondMoment coefficients = swd::second_moment_coefficients(beta2);
  constexpr int N = pack_width<P>();
  const ChunkRange r = locate(t, chunk);
  const P* g = static_cast<const P*>(t.lists[Lists::grad][r.tensor]) + r.start;
  const bool vectorized = t.vectorized[r.tensor] != 0;
  float sum = 0.0f;
#pragma unroll 4  // several independent loads in flight per thread; the add order is unchanged
  for (int64_t pos = static_cast<int64_t>(threadIdx.x) * N; pos < r.size;
       pos += static_cast<int64_t>(kThreads) * N) {
    const int64_t left = r.size - pos;
    float gv[N];
    load_pack<N>(g + pos, left, vectorized, gv);
    if constexpr (kAmsgrad) {
      const S* v = static_cast<const S*>(t.lists[Lists::exp_avg_sq][r.tensor]) + r.start;
      const S* vmax = static_cast<const S*>(t.lists[Lists::max_exp_avg_sq][r.tensor]) + r.start;
      float vv[N], mv[N];
      load_pack<N>(v + pos, left, vectorized, vv);
      load_pack<N>(vmax + pos, left, vectorized, mv);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        if (j < left) {
          sum += swd::new_max_exp_avg_sq(vv[j], mv[j], swd::effective_grad(gv[j], unscale),
                                         coefficients);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        if (j < left) {
          const float ge = swd::effective_grad(gv[j], unscale);
          sum += ge * ge;
        }
      }
    }
  }
  return block_sum(static_cast<double>(sum));
}

// One warp: tensor i's chunk sums (bucket-wide `partials`) -> its sum S of v (non-amsgrad:
// swd::updated_v_sum, written back unless the step is skipped; AMSGradS: the sum of vmax)
// -> its share of sum(v_hat) (swd::v_hat_sum), into shares[bucket index].
__device__ __forceinline__ void finalize_tensor(const TensorTable& t, int i, const double* partials,
                                                double beta2, bool amsgrad, bool skipped,
                                                double* shares) {
  const int lane = threadIdx.x & 31;
  double s = 0.0;
  for (int32_t c = t.first_chunk[i] + lane; c < t.first_chunk[i + 1]; c += 32) s += partials[c];
  s = warp_sum(s);
  if (lane == 0) {
    double sum_v = s;
    if (!amsgrad) {
      sum_v = swd::updated_v_sum(*t.v_sums[i], s, beta2);
      if (!skipped) *t.v_sums[i] = sum_v;
    }
    shares[t.first_tensor + i] = swd::v_hat_sum(sum_v, beta2, *t.steps[i]);
  }
}

// The fixed-order sum of shares[0, count), returned to every thread of the block.
__device__ __forceinline__ double sum_shares(const double* shares, int64_t count) {
  double x = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) x += shares[i];
  return block_sum(x);
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

// One chunk of the update: table lists are param, grad, then the rule's states.
template <typename Rule, typename P, typename S>
__device__ void update_chunk(const TensorTable& t, int32_t chunk,
                             const typename Rule::Scalars* scalars,
                             const swd::GradOptions& grad) {
  constexpr int N = pack_width<P>();
  constexpr int K = Rule::kStates;
  constexpr int kSlots = swd::kStateSlots<Rule>;
  const ChunkRange r = locate(t, chunk);
  const typename Rule::Scalars c = scalars[t.first_tensor + r.tensor];
  P* p = static_cast<P*>(t.lists[0][r.tensor]) + r.start;
  const P* g = static_cast<const P*>(t.lists[1][r.tensor]) + r.start;
  S* states[kSlots];
#pragma unroll
  for (int k = 0; k < K; ++k) states[k] = static_cast<S*>(t.lists[2 + k][r.tensor]) + r.start;
  const bool vectorized = t.vectorized[r.tensor] != 0;
  for (int64_t pos = static_cast<int64_t>(threadIdx.x) * N; pos < r.size;
       pos += static_cast<int64_t>(kThreads) * N) {
    const int64_t left = r.size - pos;
    float pv[N], gv[N], sv[kSlots][N];
    load_pack<N>(p + pos, left, vectorized, pv);
    load_pack<N>(g + pos, left, vectorized, gv);
#pragma unroll
    for (int k = 0; k < K; ++k) load_pack<N>(states[k] + pos, left, vectorized, sv[k]);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float s[kSlots];
#pragma unroll
      for (int k = 0; k < kSlots; ++k) s[k] = k < K ? sv[k][j] : 0.0f;
      Rule::element(pv[j], swd::effective_grad(gv[j], grad), s, c);
#pragma unroll
      for (int k = 0; k < K; ++k) sv[k][j] = s[k];
    }
    store_pack<N>(p + pos, left, vectorized, pv);
#pragma unroll
    for (int k = 0; k < K; ++k) store_pack<N>(states[k] + pos, left, vectorized, sv[k]);
  }
}

}  // namespace swd::cuda
