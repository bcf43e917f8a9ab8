"""Builds swd_kernels._C: the CPU ops always, the CUDA ops too when torch sees a GPU or
FORCE_CUDA=1 is set (the convention of torchvision and others), so a machine without a GPU does
not spend minutes compiling CUDA code it can never run.

Switches (environment variables):
  SWD_KERNELS_SKIP_CUDA_BUILD=1   build the CPU ops only (wins over everything below)
  FORCE_CUDA=1                    build the CUDA ops even where torch sees no GPU (CI; a GPU image
                                  built on a machine without one); fails with a clear error
                                  without nvcc or a CUDA build of torch
  SWD_KERNELS_CUDA_ARCHS          arch list for nvcc, default "8.0;9.0+PTX" (A100, H100/H200,
                                  PTX for anything newer); wins over TORCH_CUDA_ARCH_LIST
  MAX_JOBS                        parallel compile jobs (ninja)

Where torch sees a GPU but nvcc is missing, or torch is a CPU-only build, the CPU ops are built
and the build says why. `pip install -v` shows that line and the compile's progress.
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


def _cuda_choice() -> tuple[bool, str]:
    """Whether to build the CUDA ops, and why: one line for the build log."""
    if os.environ.get("SWD_KERNELS_SKIP_CUDA_BUILD", "0") == "1":
        return False, "SWD_KERNELS_SKIP_CUDA_BUILD=1"
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if not _sources("csrc/cuda/*.cu"):
        missing = "there are no csrc/cuda/*.cu sources"
    elif torch.version.cuda is None:
        missing = f"torch {torch.__version__} is not a CUDA build"
    elif CUDA_HOME is None:
        missing = "no CUDA toolkit was found (no nvcc on the PATH; set CUDA_HOME)"
    elif not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        missing = f"CUDA_HOME={CUDA_HOME} holds no bin/nvcc"
    else:
        missing = None
    if force:
        if missing:
            sys.exit(f"swd_kernels: FORCE_CUDA=1 asks for the CUDA ops, but {missing}. Install "
                     "nvcc and a CUDA build of torch, or unset FORCE_CUDA to build the CPU ops "
                     "only.")
        return True, "FORCE_CUDA=1"
    if not torch.cuda.is_available():
        return False, "torch sees no GPU; set FORCE_CUDA=1 to build the CUDA ops"
    if missing:
        return False, f"torch sees a GPU, but {missing}"
    return True, "torch sees a GPU"


WITH_CUDA, WHY = _cuda_choice()


class _BuildExtension(BuildExtension):
    def run(self):
        # here rather than at import, so pip's metadata steps don't repeat the line
        ops = "CPU and CUDA ops" if WITH_CUDA else "CPU ops only"
        print(f"swd_kernels: building {ops} ({WHY})", file=sys.stderr, flush=True)
        super().run()


def _extension():
    cxx = ["-O3", "-std=c++20", "-fvisibility=hidden"]  # torch >= 2.10 headers need C++20
    # at::parallel_for is an inline template: it only runs threads in files built with
    # OpenMP (torch's own builds on Linux use OpenMP; libgomp comes with torch)
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx += openmp
    sources = _sources("csrc/ops.cpp") + _sources("csrc/cpu/*.cpp")
    include_dirs = [os.path.join(HERE, "csrc")]
    if not WITH_CUDA:
        return CppExtension("swd_kernels._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx}, extra_link_args=openmp)
    archs = os.environ.get("SWD_KERNELS_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs or "8.0;9.0+PTX"
    # -fmad=false: no multiply-add contracted into FMA. nvcc decides contraction per inlined
    # copy of a rule, so the cooperative adam_step and its two-kernel fallback, and the aligned
    # and unaligned loops, differed by 1-12 ulps on the H200 (2026-11-30) although they run
    # the same rules in the same order. The kernels are memory-bound: the extra instructions
    # cost no time (bench/run.py --device cuda).
    nvcc = ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr", "-fmad=false"]
    return CUDAExtension("swd_kernels._C", sources + _sources("csrc/cuda/*.cu"),
                         include_dirs=include_dirs, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                         extra_link_args=openmp)


setup(
    name="swd_kernels",
    version="0.1.0",
    description="Fused Stable Weight Decay optimizers (AdamS, AMSGradS, SGDS, AdaiS) for PyTorch",
    packages=find_packages(include=["swd_kernels", "swd_kernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    extras_require={
        # the training frameworks are the real ones tests/test_integrations*.py drive
        # (timm brings torchvision)
        # scikit-learn: the digits data set examples/table1.py trains on (no download)
        "test": ["pytest", "hypothesis", "numpy", "expecttest",
                 "transformers", "accelerate", "lightning", "timm", "scikit-learn",
                 "matplotlib"],
        "bench": ["pytest-benchmark", "matplotlib", "numpy", "scikit-learn"],
    },
    ext_modules=[_extension()],
    cmdclass={"build_ext": _BuildExtension},
    zip_safe=False,
)
