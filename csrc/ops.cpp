// Registers the native CPU kernels for the swd_native ops, whose schemas swd_kernels/ops.py
// defines (torch.library, before this library loads). `import swd_kernels._C` loads this
// shared object; the static registrations below run on load. The CUDA kernels register
// themselves from csrc/cuda/.
#include <Python.h>

#include <torch/library.h>

#include "cpu/ops_cpu.h"

TORCH_LIBRARY_IMPL(swd_native, CPU, m) { swd::cpu::register_ops(m); }

// An empty Python module: importing it is what loads the registrations above.
static PyModuleDef swd_module = {PyModuleDef_HEAD_INIT, "_C",
                                 "swd_kernels native ops (registered with torch.library)", -1,
                                 nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&swd_module); }
