// ValueOps (swd/value_ops.h) for at::vec::Vectorized<float>, the vector type of the CPU build
// that includes this (cpu/kernels_impl.h, once per capability), so that the rules of
// swd/rules.h run on it.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "swd/value_ops.h"

namespace swd {

template <>
struct ValueOps<at::vec::Vectorized<float>> {
  using Vec = at::vec::Vectorized<float>;
  static Vec sqrt(const Vec& x) { return x.sqrt(); }
  // take_a is a comparison's lane mask (all bits set where it holds)
  static Vec select(const Vec& take_a, const Vec& a, const Vec& b) {
    return Vec::blendv(b, a, take_a);
  }
};

}  // namespace swd
