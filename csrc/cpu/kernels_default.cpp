// The CPU kernels for any x86-64 / ARM CPU: at::vec's portable Vectorized (plain arrays the
// compiler vectorizes with the baseline instruction set).
#define SWD_CPU_NAMESPACE capability_default
#define SWD_CPU_CAPABILITY_NAME "default"
#include "cpu/kernels_impl.h"
