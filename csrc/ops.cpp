// Registers the native CPU kernels for the swd_native ops, whose schemas swd_kernels/ops.py
// defines (torch.library, before this library loads). `import swd_kernels._C` loads this
// shared object; the static registrations below run on load. The CUDA kernels register
// themselves from csrc/cuda/. The module has one function, storage_dtypes.
#include <Python.h>

#include <torch/library.h>

#include "cpu/ops_cpu.h"
#include "swd/dtype_dispatch.h"

TORCH_LIBRARY_IMPL(swd_native, CPU, m) { swd::cpu::register_ops(m); }

// A Python list of the names of a dtype set's dtypes.
static PyObject* dtype_name_list(unsigned set) {
  const std::vector<const char*> names = swd::dtype_names(set);
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(names.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), PyUnicode_FromString(names[i]));
  }
  return list;
}

// {"cpu": (param dtypes, state dtypes kept beside params of another dtype), "cuda": ...}:
// the storage pairs each device's kernels are built for (swd/dtype_dispatch.h), by name.
static PyObject* storage_dtypes(PyObject*, PyObject*) {
  using swd::CpuDtypePairs;
  using swd::CudaDtypePairs;
  return Py_BuildValue("{s:(NN),s:(NN)}", "cpu", dtype_name_list(CpuDtypePairs::kParamDtypes),
                       dtype_name_list(CpuDtypePairs::kStateDtypesBeside), "cuda",
                       dtype_name_list(CudaDtypePairs::kParamDtypes),
                       dtype_name_list(CudaDtypePairs::kStateDtypesBeside));
}

static PyMethodDef swd_methods[] = {
    {"storage_dtypes", storage_dtypes, METH_NOARGS,
     "The (param, state) dtypes the native kernels take, by device type."},
    {nullptr, nullptr, 0, nullptr}};

// Importing the module is what loads the registrations above.
static PyModuleDef swd_module = {PyModuleDef_HEAD_INIT, "_C",
                                 "swd_kernels native ops (registered with torch.library)", -1,
                                 swd_methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&swd_module); }
