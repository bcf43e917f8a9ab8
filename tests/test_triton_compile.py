"""Every Triton kernel variant compiles for a CUDA sm_90 GPU (H100/H200), checked without a GPU.

The rest of the suite runs the triton backend in Triton's CPU interpreter, which executes
code the GPU compiler may reject (and never runs ptxas). Here each variant of each kernel
(storage dtypes, amsgrad, maximize, momentum/nesterov, optional inputs, aligned or not, the
two-launch kernels and the one-launch step) is compiled to PTX and assembled by ptxas.

Under ``TRITON_INTERPRET=1`` ``@triton.jit`` makes interpreted functions, which cannot be
compiled, and the choice is made at import. So the compiling happens in a child Python
process with that variable removed: this file, run as a script, compiles every variant and
prints one JSON line of results, which the tests below read (the child runs once per session).

.ci/triton36_compile.sh runs this file under Triton 3.6 (the GPU machine's) besides the 3.8
installed here; the ahead-of-time API used below (ASTSource with a name -> type signature and
constexprs keyed by argument index, GPUTarget, triton.compile, the ``launch_cooperative_grid``
option) is the same in both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = ("cuda", 90, 32)  # backend, compute capability (sm_90), warp size
# When set (to a version, e.g. 3.6.0), the compiling Triton must be that version and every
# variant must compile: a missing ptxas fails instead of skipping (.ci/triton36_compile.sh).
REQUIRED_TRITON = "SWD_KERNELS_REQUIRED_TRITON"

# Storage dtypes of one bucket: (params, grads, state).
DTYPE_SETS = {"fp32": ("float32",) * 3, "bf16": ("bfloat16",) * 3, "fp16": ("float16",) * 3,
              "bf16-fp32state": ("bfloat16", "bfloat16", "float32")}
SGD_MODES = {"plain": dict(HAS_MOMENTUM=False, NESTEROV=False),
             "momentum": dict(HAS_MOMENTUM=True, NESTEROV=False),
             "nesterov": dict(HAS_MOMENTUM=True, NESTEROV=True)}


def optional_flags(on: bool) -> dict:
    """Optional inputs and layout flags, all on or all off (variants alternate them, so every
    kernel compiles both ways)."""
    return dict(HAS_LR_TENSOR=on, HAS_GRAD_SCALE=on, HAS_FOUND_INF=on, MAXIMIZE=on, ALIGNED=on)


def variants() -> dict[str, tuple[str, str, dict]]:
    """id -> (module, kernel, constexpr flags) for every variant; dtypes by name here, tiles
    added in the child. Kept importable without Triton so test ids exist everywhere."""
    found = {}
    for d, (dtype_name, (p, g, s)) in enumerate(DTYPE_SETS.items()):
        dtypes = dict(P_DTYPE=p, G_DTYPE=g, S_DTYPE=s)
        half_state = s in ("bfloat16", "float16")  # the updates then sum what they store
        for a, amsgrad in enumerate((False, True)):
            flags = dict(optional_flags((d + a) % 2 == 0), **dtypes, AMSGRAD=amsgrad,
                         SUM_V=half_state and not amsgrad)
            name = f"{dtype_name}-{'amsgrad' if amsgrad else 'adam'}-{_flags_id(flags)}"
            reduce_flags = {k: v for k, v in flags.items()
                            if k not in ("HAS_LR_TENSOR", "MAXIMIZE", "P_DTYPE", "SUM_V")}
            found[f"adam_reduce-{name}"] = ("adam", "adam_reduce_kernel", reduce_flags)
            found[f"adam_update-{name}"] = ("adam", "adam_update_kernel", flags)
            found[f"adam_step_one_launch-{name}"] = ("adam", "adam_step_one_launch_kernel",
                                                     flags)
        flags = dict(optional_flags(d % 2 == 0), **dtypes, SUM_V=half_state)
        found[f"adai_update-{dtype_name}-{_flags_id(flags)}"] = ("adai", "adai_update_kernel",
                                                                  flags)
        for m, (mode, mode_flags) in enumerate(SGD_MODES.items()):
            flags = dict(optional_flags((d + m) % 2 == 0), **dtypes, **mode_flags)
            found[f"sgd_update-{dtype_name}-{mode}-{_flags_id(flags)}"] = (
                "sgd", "sgd_update_kernel", flags)
    # every kernel once more with its count arguments equal to 1 (one tensor, one chunk, a
    # 1-element bucket), which the GPU's launcher passes as constants (INTS_EQUAL_TO_ONE)
    for variant_id in [v for v in found if v.split("-", 1)[1].startswith("fp32-")
                       and v.endswith("-optional-on")]:
        module_name, kernel_name, flags = found[variant_id]
        kernel_id = variant_id.split("-", 1)[0]
        found.setdefault(f"{kernel_id}-ints-equal-to-one", (module_name, kernel_name,
                                                            dict(flags, **{ONES: True})))
    return found


def _flags_id(flags: dict) -> str:
    return "optional-on" if flags["ALIGNED"] else "optional-off"


# A variant flag, not a kernel parameter: compile with the INTS_EQUAL_TO_ONE arguments as the
# constant 1. Triton's launcher on a GPU specializes an int argument equal to 1 into a Python
# constant (the interpreter never does), so code such as ``total_numel.to(...)`` compiles for
# every other value and fails there (found on the H200 for a 1-element bucket, 2026-11-30).
ONES = "_INTS_EQUAL_TO_ONE"
INTS_EQUAL_TO_ONE = ("n_tensors", "n_chunks", "total_numel")


# ------------------------------------------------------------------ the child process ------

# Kernel arguments that are pointers, by name (everything else is an int or an fp32 scalar).
POINTER_TYPES = {"pointer_table": "*i64", "chunk_tensor": "*i64", "chunk_start": "*i64",
                 "numels": "*i64", "first_chunk": "*i64", "partials": "*fp64",
                 "tensor_sums": "*fp64", "tensor_counters": "*i32", "counter": "*i32",
                 "counters": "*i32", "accum": "*fp64"}
# Optional input tensors: fp32 when given, else the launcher passes a dummy (accum, fp64).
OPTIONAL_POINTERS = {"lr_tensor": "HAS_LR_TENSOR", "grad_scale": "HAS_GRAD_SCALE",
                     "found_inf": "HAS_FOUND_INF"}
INT_TYPES = {"n_tensors": "i32", "n_chunks": "i32", "chunk_size": "i32", "total_numel": "i64"}
# Approximate fp32 division and square root: what Triton's fp32 `/` and `tl.sqrt` compile to
# on NVIDIA GPUs (the interpreter divides exactly, so only the PTX shows them). rules.h divides
# and takes roots correctly rounded, so the kernels use tl.div_rn / tl.sqrt_rn instead. Only
# fp32 forms count: libdevice's float64 log (the decay scale's (v_bar + decay_eps)^-p) seeds
# its Newton steps with rcp.approx.ftz.f64 and is accurate to an ulp of a double.
APPROXIMATE_PTX = ("div.full.f32", "div.approx.f32", "div.approx.ftz.f32", "sqrt.approx.f32",
                   "sqrt.approx.ftz.f32", "rcp.approx.f32", "rcp.approx.ftz.f32")


def compile_variant(module_name: str, kernel_name: str, flags: dict) -> dict:
    """Compile one variant for TARGET; its PTX's global load/store counts on success."""
    import importlib

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    from swd_kernels.backends.triton import adam, chunking, workspace

    module = importlib.import_module(f"swd_kernels.backends.triton.{module_name}")
    kernel = getattr(module, kernel_name)
    flags = dict(flags)
    ones = flags.pop(ONES, False)
    unknown = set(flags) - set(kernel.arg_names)
    assert not unknown, f"{kernel_name} has no parameters {sorted(unknown)}"
    constexprs = {k: getattr(tl, v) if k.endswith("_DTYPE") else v for k, v in flags.items()}
    if ones:
        constexprs.update({k: 1 for k in INTS_EQUAL_TO_ONE if k in kernel.arg_names})
    tiles = dict(BLOCK=chunking.BLOCK, TENSOR_TILE=chunking.TENSOR_TILE,
                 PARTIAL_TILE=chunking.PARTIAL_TILE, ARRIVE=workspace.BARRIER_ARRIVE,
                 RELEASE=workspace.BARRIER_RELEASE, DONE=workspace.STEP_DONE)
    constexprs.update({k: v for k, v in tiles.items() if k in kernel.arg_names})
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in OPTIONAL_POINTERS:
            signature[name] = "*fp32" if flags[OPTIONAL_POINTERS[name]] else "*fp64"
        else:
            signature[name] = POINTER_TYPES.get(name) or INT_TYPES.get(name) or "fp32"
    options = {}
    if kernel_name == "adam_step_one_launch_kernel":  # as adam_step_one_launch launches it
        options = adam.one_launch_options()
        if not adam.cooperative_launch_supported():
            del options["launch_cooperative_grid"]
    source = triton.compiler.ASTSource(
        fn=kernel, signature=signature,
        constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget(*TARGET), options=options)
    ptx = compiled.asm["ptx"]
    if not compiled.asm.get("cubin"):
        raise RuntimeError("ptxas produced no cubin")
    return {"ld_global_v4": ptx.count("ld.global.v4"), "ld_global": ptx.count("ld.global"),
            "st_global": ptx.count("st.global"),
            "approx_div_sqrt": sum(ptx.count(op) for op in APPROXIMATE_PTX),
            "registers": registers_per_thread(compiled.asm["cubin"]),
            "shared": compiled.metadata.shared, "num_warps": compiled.metadata.num_warps}


def registers_per_thread(cubin: bytes) -> int | None:
    """Registers a thread of the kernel takes, read by the cuobjdump Triton ships (None when
    there is none to ask)."""
    import re
    import tempfile

    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        usage = subprocess.run([tool, "--dump-resource-usage", file.name],
                               capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+)", usage)
    return int(found.group(1)) if found else None


def missing_toolchain() -> str | None:
    """Why this Triton cannot compile for TARGET here, or None."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        triton.compiler.ASTSource  # noqa: B018
    except (ImportError, AttributeError) as error:
        return f"the installed Triton lacks the ahead-of-time compile API: {error}"
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        return None  # cannot ask: let the compiles say
    try:
        try:
            get_ptxas(TARGET[1])
        except TypeError:  # older Tritons take no arch
            get_ptxas()
    except Exception as error:  # noqa: BLE001 (whatever Triton raises for a missing tool)
        return f"ptxas, which compiling for sm_90 needs, is missing: {error}"
    return None


def child_main() -> None:
    import triton
    reason = missing_toolchain()
    results = {"skip": reason, "triton": triton.__version__, "variants": {}}
    if reason is None:
        for variant_id, (module_name, kernel_name, flags) in variants().items():
            try:
                results["variants"][variant_id] = {
                    "ok": True, **compile_variant(module_name, kernel_name, flags)}
            except Exception as error:  # noqa: BLE001 (reported per variant by the tests)
                results["variants"][variant_id] = {
                    "ok": False, "error": f"{type(error).__name__}: {error}"[-4000:]}
    print(json.dumps(results))


# ------------------------------------------------------------------ the tests --------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    pytest.importorskip("triton", reason="the triton backend needs Triton installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    # a fresh cache: every variant really goes through the compiler and ptxas
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))
    child = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, f"the compile process failed:\n{child.stderr[-6000:]}"
    results = json.loads(child.stdout.strip().splitlines()[-1])
    required = os.environ.get(REQUIRED_TRITON)
    if required:  # .ci/triton36_compile.sh: this Triton, and no skipping
        assert results["triton"] == required, (
            f"compiled with Triton {results['triton']}, not {REQUIRED_TRITON}={required}")
        assert not results["skip"], results["skip"]
    if results["skip"]:
        pytest.skip(results["skip"])
    return results["variants"]


@pytest.mark.parametrize("variant_id", list(variants()))
def test_kernel_compiles_for_sm90(compiled, variant_id):
    result = compiled[variant_id]
    assert result["ok"], f"{variant_id} does not compile for sm_90:\n{result['error']}"
    assert result["ld_global"] > 0 and result["st_global"] > 0


@pytest.mark.parametrize("variant_id", list(variants()))
def test_kernel_divides_and_roots_correctly_rounded(compiled, variant_id):
    """No approximate fp32 division or square root in the GPU code: the CPU interpreter (and
    rules.h) round them correctly, so an approximate one would pass every CPU test and still
    differ from the native backend on the GPU."""
    result = compiled[variant_id]
    assert result["ok"], result.get("error")
    assert result["approx_div_sqrt"] == 0, f"{variant_id} uses {APPROXIMATE_PTX} instructions"


@pytest.mark.parametrize("variant_id", [v for v in variants() if v.startswith("adam_reduce")])
def test_reduce_kernel_leaves_room_for_four_programs_per_sm(compiled, variant_id):
    """The reduce kernel streams grads; its final pass's float64 tile must not inflate the
    register count of every program (236 registers, 2 programs per SM, starved the loads)."""
    registers = compiled[variant_id]["registers"]
    if registers is None:
        pytest.skip("no cuobjdump next to this Triton to read register counts")
    assert registers * 32 * 4 * 4 <= 65536, f"{registers} registers a thread"


@pytest.mark.parametrize("variant_id", [v for v in variants()
                                        if v.startswith("adam_update-fp32") and "-on" in v])
def test_aligned_fp32_update_loads_16_bytes_at_a_time(compiled, variant_id):
    """ALIGNED (every tensor 16-byte aligned) must let the compiler emit 128-bit loads: the
    update is memory-bound, and scalar loads would cost bandwidth."""
    assert compiled[variant_id]["ld_global_v4"] > 0


@pytest.mark.parametrize("variant_id", [v for v in variants()
                                        if v.startswith("adam_step_one_launch")])
def test_one_launch_kernel_keeps_two_programs_per_sm90_sm(compiled, variant_id):
    """The one-launch step's grid is as many programs as the GPU holds at once
    (occupancy.py): its registers, at ONE_LAUNCH_WARPS warps a program, must leave room for
    two programs on an H100/H200 SM, so each SM has two programs' loads in flight."""
    from swd_kernels.backends.triton.occupancy import SmLimits, programs_per_sm
    result = compiled[variant_id]
    if result["registers"] is None:
        pytest.skip("no cuobjdump next to this Triton to read register counts")
    sm90 = SmLimits(registers=65536, threads=2048, shared_memory=233472, blocks=32, count=132)
    fit = programs_per_sm(result["registers"], result["shared"], result["num_warps"], sm90)
    assert fit >= 2, (f"{result['registers']} registers a thread at {result['num_warps']} "
                      f"warps: {fit} program(s) per SM")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    child_main()
    sys.exit(0)
