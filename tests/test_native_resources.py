"""The native CUDA kernels do not spill registers, checked on the built library without a GPU.

The chunk kernels run 512 threads with at least 2 blocks per SM, so ptxas caps them at 64
registers, and whatever does not fit goes to a stack frame in local memory: extra traffic
inside a bandwidth-bound loop, which no CPU test and no result on a GPU would show.
`cuobjdump -res-usage` lists each kernel's registers and stack bytes for every GPU
architecture in the library; the tests hold every kernel to STACK_LIMITS (by kernel family
and param dtype) and check that the listing holds every kernel the dtype table instantiates,
so a parser that finds nothing cannot pass. The parser is also run on a listing nvcc and
cuobjdump produce here from a tiny source with a known stack frame.

A CPU-only build (the default where torch sees no GPU) holds no CUDA code: the library tests
skip there. CI builds with FORCE_CUDA=1, so they run on every change.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

# Bytes of stack a kernel may use, by family and by its param dtype (None: a kernel with no
# dtype). With CUDA 13.0 every kernel uses none on sm_80 and sm_90; 16-bit params keep a few
# bytes of slack for other compiler versions.
STACK_LIMITS = {
    "adam_step_kernel": {"float": 0, "double": 0, "c10::BFloat16": 8, "c10::Half": 8},
    "reduce_chunks_kernel": {"float": 0, "double": 0, "c10::BFloat16": 0, "c10::Half": 0},
    "update_kernel": {"float": 0, "double": 0, "c10::BFloat16": 8, "c10::Half": 8},
    "finalize_kernel": {None: 0},
    "v_sums_kernel": {None: 0},
    "prepare_kernel": {None: 0},
}
# Where a family's param dtype sits among its template arguments.
PARAM_POSITION = {"adam_step_kernel": 0, "reduce_chunks_kernel": 0, "update_kernel": 1}

# The (param, state) storage pairs of the CUDA kernels, as csrc/swd/dtype_dispatch.h's
# CudaDtypePairs lists them: params of every dtype, state in the param dtype or fp32.
PARAM_DTYPES = ("float", "c10::BFloat16", "c10::Half", "double")
DTYPE_PAIRS = [(p, p) for p in PARAM_DTYPES] + [(p, "float") for p in PARAM_DTYPES
                                                if p != "float"]
RULES = ("swd::AdamRule<false>", "swd::AdamRule<true>", "swd::AdaiRule", "swd::SgdRule<false>",
         "swd::SgdRule<true>")


def expected_kernels() -> set[tuple[str, tuple[str, ...]]]:
    """(family, template arguments) of every kernel the csrc/cuda/*.cu files instantiate."""
    bools = ("false", "true")
    kernels = {("finalize_kernel", ()), ("v_sums_kernel", ())}
    kernels |= {("prepare_kernel", (rule,)) for rule in RULES}
    kernels |= {("adam_step_kernel", (p, s, b)) for p, s in DTYPE_PAIRS for b in bools}
    kernels |= {("reduce_chunks_kernel", (p, s, "true")) for p, s in DTYPE_PAIRS}
    kernels |= {("reduce_chunks_kernel", (p, p, "false")) for p in PARAM_DTYPES}
    for rule in RULES:
        # SGDS without momentum has no state: one instantiation per param dtype
        pairs = [(p, p) for p in PARAM_DTYPES] if rule == "swd::SgdRule<false>" else DTYPE_PAIRS
        kernels |= {("update_kernel", (rule, p, s)) for p, s in pairs}
    return kernels


# ------------------------------------------------------------------ the parser -------------

@dataclasses.dataclass(frozen=True)
class KernelUsage:
    arch: str        # e.g. "sm_90"
    name: str        # demangled, e.g. "void swd::cuda::update_kernel<...>(...)"
    registers: int
    stack: int       # bytes


def parse_resource_usage(listing: str) -> list[KernelUsage]:
    """Every kernel of a `cuobjdump -res-usage` listing, with the architecture of the code it
    belongs to (PTX sections list no resources)."""
    found, arch, function = [], None, None
    for line in listing.splitlines():
        if line.startswith("Fatbin "):
            arch, function = None, None
        elif match := re.match(r"arch = (sm_\d+\w*)", line):
            arch = match.group(1)
        elif match := re.match(r"\s*Function (\S+):\s*$", line):
            function = match.group(1)
        elif function and (match := re.search(r"\bREG:(\d+) STACK:(\d+)", line)):
            assert arch is not None, f"resources of {function} outside an sm_* section"
            found.append(KernelUsage(arch, function, int(match.group(1)), int(match.group(2))))
            function = None
    names = demangle([k.name for k in found])
    return [dataclasses.replace(k, name=n) for k, n in zip(found, names)]


def demangle(names: list[str]) -> list[str]:
    if not names:
        return []
    tool = shutil.which("c++filt")
    assert tool, "c++filt (GNU binutils, which building the library needs) is not on the PATH"
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == len(names), out
    return out


def split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside any <...> or (...)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def signature(demangled: str) -> tuple[str, tuple[str, ...]]:
    """(family, template arguments) of a demangled kernel name:
    "void ns::k<A, B<c>>(args)" -> ("k", ("A", "B<c>"))."""
    name = demangled.removeprefix("void ")
    depth = 0
    for i, char in enumerate(name):  # drop the parameter list: the first "(" outside <...>
        depth += (char == "<") - (char == ">")
        if char == "(" and depth == 0 and not name.startswith("(anonymous", i):
            name = name[:i]
            break
    base, _, arguments = name.partition("<")
    family = base.split("::")[-1]
    return family, tuple(split_top_level(arguments[:-1])) if arguments else ()


def stack_limit(family: str, arguments: tuple[str, ...]) -> int | None:
    """The stack bytes STACK_LIMITS allows this kernel; None when the table does not say."""
    position = PARAM_POSITION.get(family)
    if position is not None and position >= len(arguments):
        return None
    dtype = arguments[position] if position is not None else None
    return STACK_LIMITS.get(family, {}).get(dtype)


def over_limit(kernels: list[KernelUsage]) -> list[str]:
    """One line per kernel whose stack exceeds its limit (or that the table does not know)."""
    lines = []
    for k in kernels:
        family, arguments = signature(k.name)
        label = f"{k.arch} {family}" + (f"<{', '.join(arguments)}>" if arguments else "")
        limit = stack_limit(family, arguments)
        if limit is None:
            lines.append(f"{label}: no limit in STACK_LIMITS (stack {k.stack} B, "
                         f"{k.registers} registers)")
        elif k.stack > limit:
            lines.append(f"{label}: stack {k.stack} B > {limit} B ({k.registers} registers)")
    return lines


# ------------------------------------------------------------------ tools ------------------

def find_cuda_tool(name: str) -> str | None:
    """`name` from the PATH, the CUDA toolkit, or the copy Triton ships (cuobjdump)."""
    candidates = [shutil.which(name)]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", name))
    triton = importlib.util.find_spec("triton")
    if triton is not None and triton.submodule_search_locations:
        candidates.append(os.path.join(triton.submodule_search_locations[0], "backends",
                                       "nvidia", "bin", name))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def cuobjdump_or_skip() -> str:
    tool = find_cuda_tool("cuobjdump")
    if tool is None:
        pytest.skip("cuobjdump not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, or the "
                    "one in Triton's wheel): cannot read the kernels' resource usage")
    return tool


def resource_listing(tool: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-res-usage", path], capture_output=True, text=True,
                          timeout=300)


# ------------------------------------------------------------------ the tests --------------

@pytest.fixture(scope="module")
def library_kernels() -> list[KernelUsage]:
    spec = importlib.util.find_spec("swd_kernels._C")
    if spec is None or not spec.origin:
        pytest.skip("swd_kernels._C is not built, so there are no CUDA kernels to inspect")
    tool = cuobjdump_or_skip()
    result = resource_listing(tool, spec.origin)
    if "does not contain device code" in result.stdout + result.stderr:
        pytest.skip(f"{os.path.basename(spec.origin)} holds no CUDA code (a CPU-only build; "
                    "FORCE_CUDA=1 builds the CUDA ops, as CI does)")
    assert result.returncode == 0, f"{tool} failed:\n{result.stderr[-4000:]}"
    return parse_resource_usage(result.stdout)


def test_library_lists_every_kernel_for_each_architecture(library_kernels):
    """Each GPU architecture built holds exactly the kernels the dtype table instantiates, so
    the stack check below sees all of them."""
    archs = sorted({k.arch for k in library_kernels})
    assert archs, "the listing names no sm_* architecture"
    expected = expected_kernels()
    for arch in archs:
        found = [signature(k.name) for k in library_kernels if k.arch == arch]
        assert len(found) == len(set(found)), f"{arch}: a kernel is listed twice"
        assert set(found) == expected, (
            f"{arch}: missing {sorted(expected - set(found))}, "
            f"unexpected {sorted(set(found) - expected)}")


def test_library_kernels_stay_within_their_stack_limits(library_kernels):
    offenders = over_limit(library_kernels)
    assert not offenders, ("kernels spill registers to the stack beyond STACK_LIMITS "
                           "(see csrc/cuda/chunk_phases.cuh on the register budget):\n"
                           + "\n".join(offenders))


TINY_SOURCE = r"""
template <typename T>
__global__ void adam_step_kernel(T* out, T by) { out[threadIdx.x] *= by; }
template __global__ void adam_step_kernel<float>(float*, float);
template __global__ void adam_step_kernel<double>(double*, double);

namespace {
// written at indices known only at run time, the array lives in local memory: 256 B of stack
__global__ void finalize_kernel(float* out, int stride) {
  float a[64];
  for (int k = 0; k < 64; ++k) a[(k * stride) & 63] = out[k];
  float sum = 0.0f;
  for (int k = 0; k < 64; ++k) sum += a[k] * k;
  out[threadIdx.x] = sum;
}
}  // namespace
void launch(float* out) { finalize_kernel<<<1, 1>>>(out, 3); }
"""


def test_parser_reads_a_real_listing_and_flags_a_stack_frame(tmp_path):
    """nvcc builds an object like the library's (device code for sm_80 and sm_90, plus PTX)
    from a template kernel and one with a 256-byte stack frame in an anonymous namespace: the
    parser finds the three kernels on both architectures, and the check flags only the one
    with a stack."""
    tool = cuobjdump_or_skip()
    nvcc = find_cuda_tool("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: cannot build the sample object")
    source = tmp_path / "tiny.cu"
    source.write_text(TINY_SOURCE)
    obj = tmp_path / "tiny.o"
    subprocess.run([nvcc, "-c", str(source), "-o", str(obj),
                    "-gencode", "arch=compute_80,code=sm_80",
                    "-gencode", "arch=compute_90,code=[sm_90,compute_90]"],
                   check=True, capture_output=True, timeout=300)
    result = resource_listing(tool, str(obj))
    assert result.returncode == 0, result.stderr

    kernels = parse_resource_usage(result.stdout)
    assert sorted((k.arch, signature(k.name)) for k in kernels) == sorted(
        (arch, kernel) for arch in ("sm_80", "sm_90")
        for kernel in [("finalize_kernel", ()), ("adam_step_kernel", ("double",)),
                       ("adam_step_kernel", ("float",))])
    assert all(k.registers > 0 for k in kernels)
    assert all((k.stack >= 256) == ("finalize_kernel" in k.name) for k in kernels), kernels
    offenders = over_limit(kernels)
    assert sorted(line.split(":")[0] for line in offenders) == [
        "sm_80 finalize_kernel", "sm_90 finalize_kernel"], offenders


def test_signature_of_demangled_names():
    assert signature("void swd::cuda::(anonymous namespace)::adam_step_kernel<c10::Half, "
                     "float, true>(swd::cuda::TensorTable, swd::cuda::ReduceInputs)") == (
        "adam_step_kernel", ("c10::Half", "float", "true"))
    assert signature("void swd::cuda::update_kernel<swd::AdamRule<true>, c10::BFloat16, "
                     "float>(swd::cuda::TensorTable, swd::AdamRule<true>::Scalars const*)") == (
        "update_kernel", ("swd::AdamRule<true>", "c10::BFloat16", "float"))
    assert signature("swd::cuda::(anonymous namespace)::finalize_kernel(swd::cuda::"
                     "TensorTable, long)") == ("finalize_kernel", ())
