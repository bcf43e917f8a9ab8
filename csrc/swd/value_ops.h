// The operations the rules of swd/rules.h use beyond + - * / and comparisons, for each value
// type they run on: float here (host code and CUDA), at::vec::Vectorized<float> in
// cpu/vec_value_ops.h, kept apart so that CUDA builds never include ATen's vector headers.
// A comparison gives a bool for float and a lane mask for a vector; select() takes either.
// Callers qualify these names (swd::clamp): at::vec has its own clamp with other NaN rules,
// which argument-dependent lookup would prefer for vectors.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SWD_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined on the host: the CPU kernels are compiled once per ISA (cpu/kernels_*.cpp),
// and the linker keeps one out-of-line copy of an inline function for all of them, so a
// copy compiled for AVX-512 could run in the portable build on a CPU without AVX-512.
#define SWD_HD inline __attribute__((always_inline))
#else
#define SWD_HD inline
#endif

namespace swd {

template <typename V>
struct ValueOps;  // specialised for each value type

template <>
struct ValueOps<float> {
  SWD_HD static float sqrt(float x) { return ::sqrtf(x); }
  SWD_HD static float select(bool take_a, float a, float b) { return take_a ? a : b; }
};

template <typename V>
SWD_HD V square_root(const V& x) {
  return ValueOps<V>::sqrt(x);
}

// a where `take_a` holds, else b (per lane for vectors).
template <typename Mask, typename V>
SWD_HD V select(const Mask& take_a, const V& a, const V& b) {
  return ValueOps<V>::select(take_a, a, b);
}

// a > b ? a : b
template <typename V>
SWD_HD V larger(const V& a, const V& b) {
  return select(a > b, a, b);
}

// x < lo ? lo : x, then > hi ? hi : that; a NaN x stays NaN.
template <typename V>
SWD_HD V clamp(const V& x, const V& lo, const V& hi) {
  const V low_clamped = select(x < lo, lo, x);
  return select(low_clamped > hi, hi, low_clamped);
}

}  // namespace swd
