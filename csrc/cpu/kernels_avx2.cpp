// The CPU kernels built for AVX2 + FMA + F16C, used only where the CPU has them
// (capability.cpp checks at run time). Only this file's kernel code gets the AVX2 target: the
// torch and standard headers and swd/dtype_dispatch.h, which it shares with the rest of the
// library, are included first, for the baseline target, so no AVX2 copy of a shared inline
// function can leak into other files. The rule headers (swd/rules.h and what it includes)
// come in with the kernels, under the AVX2 target: a template defined before the target
// pragma keeps the baseline target when instantiated for AVX2 vectors and cannot inline
// their operations. Their functions are always inlined (SWD_HD), so no copy is left to leak.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/irange.h>

#include "swd/dtype_dispatch.h"

// at::vec's AVX2 Vectorized, in its own inline namespace at::vec::AVX2
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
// g++ does not define these for a target pragma; sleef.h (via at::vec) declares its AVX2
// functions only under them
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define SWD_CPU_NAMESPACE capability_avx2
#define SWD_CPU_CAPABILITY_NAME "avx2"
#include "cpu/kernels_impl.h"
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef __F16C__
#pragma GCC pop_options

#else  // no way to target AVX2 from this compiler: the capability is never chosen

#include "cpu/kernels.h"

namespace swd::cpu::capability_avx2 {
const Kernels& kernels() { return capability_default::kernels(); }
}  // namespace swd::cpu::capability_avx2

#endif
