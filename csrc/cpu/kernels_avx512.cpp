// The CPU kernels built for AVX-512 (F, BW, VL, DQ) + FMA + F16C, used only where the CPU has
// them (capability.cpp checks at run time). Built like kernels_avx2.cpp: shared headers first
// for the baseline target, then only the kernel code for AVX-512.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)

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

// at::vec's AVX-512 Vectorized, in its own inline namespace at::vec::AVX512
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
// g++ does not define these for a target pragma; sleef.h (via at::vec) declares its vector
// functions only under them
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#define SWD_CPU_NAMESPACE capability_avx512
#define SWD_CPU_CAPABILITY_NAME "avx512"
#include "cpu/kernels_impl.h"
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef __F16C__
#undef __AVX512F__
#undef __AVX512BW__
#undef __AVX512VL__
#undef __AVX512DQ__
#pragma GCC pop_options

#else  // no way to target AVX-512 from this compiler: the capability is never chosen

#include "cpu/kernels.h"

namespace swd::cpu::capability_avx512 {
const Kernels& kernels() { return capability_default::kernels(); }
}  // namespace swd::cpu::capability_avx512

#endif
