"""Builds swd_kernels._C: the CPU ops always, the CUDA ops where nvcc and a CUDA build of torch
are present.

Switches (environment variables):
  SWD_KERNELS_SKIP_CUDA_BUILD=1   build the CPU ops only
  SWD_KERNELS_CUDA_ARCHS          arch list for nvcc, default "8.0;9.0+PTX" (A100, H100/H200,
                                  PTX for anything newer)
  MAX_JOBS                        parallel compile jobs (ninja)
"""
import glob
import os
import sys

from setuptools import find_packages, setup

# torch takes CUDA_HOME from the directory of `which nvcc`; where nvcc on the PATH is a wrapper
# script (/usr/local/bin/nvcc here) that guess lacks lib64/libcudart. Prefer the toolkit's own
# directory when it exists and the user set none.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists(
        "/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME, BuildExtension, CppExtension, CUDAExtension)

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _want_cuda() -> bool:
    if os.environ.get("SWD_KERNELS_SKIP_CUDA_BUILD", "0") == "1":
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None and bool(_sources("csrc/cuda/*.cu"))


def _extension():
    with_cuda = _want_cuda()
    cxx = ["-O3", "-std=c++20", "-fvisibility=hidden"]  # torch >= 2.10 headers need C++20
    # at::parallel_for is an inline template: it only runs threads in files built with
    # OpenMP (torch's own builds on Linux use OpenMP; libgomp comes with torch)
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx += openmp
    sources = _sources("csrc/ops.cpp") + _sources("csrc/cpu/*.cpp")
    include_dirs = [os.path.join(HERE, "csrc")]
    if not with_cuda:
        return CppExtension("swd_kernels._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx}, extra_link_args=openmp)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST",
                          os.environ.get("SWD_KERNELS_CUDA_ARCHS", "8.0;9.0+PTX"))
    nvcc = ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr"]
    return CUDAExtension("swd_kernels._C", sources + _sources("csrc/cuda/*.cu"),
                         include_dirs=include_dirs, define_macros=[("SWD_WITH_CUDA", "1")],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                         extra_link_args=openmp)


setup(
    name="swd_kernels",
    version="0.1.0",
    description="Fused Stable Weight Decay optimizers (AdamS, AMSGradS, SGDS, AdaiS) for PyTorch",
    packages=find_packages(include=["swd_kernels", "swd_kernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    extras_require={
        "test": ["pytest", "hypothesis", "numpy", "expecttest"],
        "bench": ["pytest-benchmark", "matplotlib", "numpy"],
    },
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
