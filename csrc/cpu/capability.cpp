// Picks, once, which build of the CPU kernels this machine runs.
#include <cstdlib>
#include <cstring>

#include <c10/util/Exception.h>

#include "cpu/kernels.h"

namespace swd::cpu {
namespace {

bool cpu_has_avx2() {
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const Kernels& choose() {
  const char* forced = std::getenv("SWD_KERNELS_CPU_CAPABILITY");
  if (forced != nullptr && std::strcmp(forced, "default") == 0) {
    return capability_default::kernels();
  }
  if (forced != nullptr && std::strcmp(forced, "avx2") == 0) {
    TORCH_CHECK(cpu_has_avx2(), "SWD_KERNELS_CPU_CAPABILITY=avx2 but this CPU lacks "
                "AVX2/FMA/F16C: unset it or set it to 'default'");
    return capability_avx2::kernels();
  }
  if (forced != nullptr && std::strcmp(forced, "avx512") == 0) {
    TORCH_CHECK(cpu_has_avx512(), "SWD_KERNELS_CPU_CAPABILITY=avx512 but this CPU lacks "
                "AVX-512 F/BW/VL/DQ: unset it or set it to 'avx2' or 'default'");
    return capability_avx512::kernels();
  }
  TORCH_CHECK(forced == nullptr || forced[0] == '\0', "SWD_KERNELS_CPU_CAPABILITY must be "
              "'default', 'avx2' or 'avx512', got '", forced, "'");
  if (cpu_has_avx512()) return capability_avx512::kernels();
  return cpu_has_avx2() ? capability_avx2::kernels() : capability_default::kernels();
}

}  // namespace

const Kernels& best_kernels() {
  static const Kernels& chosen = choose();
  return chosen;
}

}  // namespace swd::cpu
