"""What only the triton backend has, run on CPU in Triton's interpreter: its hand rounding to
bf16/fp16, buckets spread over several chunks at its own chunk size, the one-launch step
against the two-launch one, and its cached pointer tables. (Its ops against the float64
oracle, like every backend's: test_native_cpu.py; its kernels compiled for sm_90:
test_triton_compile.py.)

Run: TRITON_INTERPRET=1 python -m pytest tests/test_triton.py -q
(the variable must be set before anything imports triton; this module sets it itself when it
is the first to import triton, e.g. `pytest tests/test_triton.py` alone or first).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import op_cases  # noqa: E402  (tests/ is on sys.path: conftest.py)
import swd_kernels  # noqa: E402
from op_cases import BucketCase  # noqa: E402
from swd_kernels import ops  # noqa: E402

triton = pytest.importorskip("triton")
triton_backend = pytest.importorskip("swd_kernels.backends.triton")
import triton.language as tl  # noqa: E402
from swd_kernels.backends.triton import adam as triton_adam  # noqa: E402
from swd_kernels.backends.triton import chunking  # noqa: E402
from swd_kernels.backends.triton.common import TL_DTYPES, to_storage  # noqa: E402

if not triton_backend.kernels_interpreted():
    pytest.skip("another test module imported triton before TRITON_INTERPRET=1 was set, so "
                "these kernels are compiled, not interpreted: run this file in its own "
                "process (TRITON_INTERPRET=1 python -m pytest tests/test_triton.py)",
                allow_module_level=True)


def test_backend_is_available_on_cpu_in_the_interpreter():
    assert "triton" in swd_kernels.available_backends("cpu")
    assert "interpreter" in triton_backend.unavailable_reason(torch.device("cuda"))


@triton.jit
def _store_rounded(source, target, n, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(target + offs, to_storage(tl.load(source + offs, mask=offs < n), DTYPE),
             mask=offs < n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_storage_rounds_to_nearest_even(dtype):
    """Every kernel stores through ``to_storage``: bitwise torch's (and the GPU's) fp32 -> half
    rounding, exact ties to even included. The interpreter's own bf16 cast truncates, which
    drifted bf16 params by one ulp per step against the oracle."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-2 ** 31, 2 ** 31, (1 << 16,), generator=gen, dtype=torch.int64)
    spacing = torch.finfo(dtype).eps  # one ulp at 1
    ties = [1 + spacing / 2, 1 + 3 * spacing / 2, -(1 + spacing / 2), 2 - spacing / 4]
    special = [float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 3.4e38, -3.4e38, 1e-40,
               70000.0, 65519.0, 65520.0]
    values = torch.cat([bits.to(torch.int32).view(torch.float32), torch.tensor(ties + special),
                        torch.randn(4096, generator=gen)])
    stored = torch.empty(values.shape, dtype=dtype)
    _store_rounded[(triton.cdiv(values.numel(), 4096),)](values, stored, values.numel(),
                                                         TL_DTYPES[dtype], 4096)
    expected = values.to(dtype)
    same = (stored.view(torch.int16) == expected.view(torch.int16)) | (
        stored.isnan() & expected.isnan())
    assert same.all(), (f"{(~same).sum().item()} values stored wrongly, e.g. "
                        f"{values[~same][:4].tolist()} -> {stored[~same][:4].tolist()}, "
                        f"not {expected[~same][:4].tolist()}")


# ------------------------------------------------------------------ several chunks ----------

def several_chunks(program=("adam_step",), **options) -> op_cases.Bucket:
    """A bucket whose first tensor spans three of the triton backend's largest chunks and a
    partial fourth (a masked tail), beside a one-chunk and a tiny tensor: at the chunk size
    the module picks, whatever that is up to its largest, programs of one tensor write several
    partials that the reduction must add up in order. Built at full size on every backend."""
    shapes = ((3 * chunking.CHUNK + 5,), (chunking.CHUNK,), (3,))
    return op_cases.Bucket(BucketCase(program=program, shapes=shapes, seed=12, **options))


@pytest.mark.parametrize("program", [("adam_step",), ("adam_reduce", "adam_update"),
                                     ("adam_reduce", "adai_update")], ids="+".join)
def test_bucket_of_several_chunks(backend, program):
    bucket = several_chunks(program, hyper=dict(decay_power=0.25, decay_eps=1e-6)
                            if program[-1] != "adai_update" else {})
    if backend == "triton":
        layout = chunking.chunk_layout(bucket.tensors["grads"])
        assert -(-bucket.case.shapes[0][0] // layout.chunk) >= 4, (
            f"chunks of {layout.chunk} elements: the first tensor no longer spans several")
    op_cases.assert_matches_oracle(op_cases.run(backend, bucket))


# ------------------------------------------------------------------ one launch ---------------

def one_launch_step(args: dict) -> None:
    """``adam_step`` as the one-launch kernel with a single program (the interpreter runs
    programs one after another, so more would wait at the grid barrier forever)."""
    launch = triton_adam.adam_launch(
        args["params"], args["grads"], args["exp_avgs"], args["exp_avg_sqs"],
        args["max_exp_avg_sqs"], args["state_steps"], args["v_sums"], args["accum"],
        args["grad_scale"], args["found_inf"], args["amsgrad"])
    update_args = triton_adam.adam_update_args(
        args["params"], args["exp_avg_sqs"], args["accum"], args["lr_tensor"], args["lr"],
        args["beta1"], args["beta2"], args["weight_decay"], args["eps"], args["decay_power"],
        args["decay_eps"], args["amsgrad"], args["maximize"])
    triton_adam.adam_step_one_launch(launch, update_args, programs=1)


@pytest.mark.parametrize("bucket", [
    pytest.param(lambda: op_cases.make(BucketCase(lr_tensor=0.01, seed=4), "triton"),
                 id="standard"),
    pytest.param(lambda: op_cases.make(BucketCase(hyper=dict(amsgrad=True), grad_scale=8.0,
                                                  param_dtype=torch.bfloat16, seed=4),
                                       "triton"), id="amsgrad-grad_scale-bf16"),
    pytest.param(lambda: several_chunks(hyper=dict(decay_power=0.25, decay_eps=1e-6)),
                 id="several-chunks"),
])
def test_one_launch_step_is_bitwise_the_two_launch_step(bucket):
    """The persistent-grid path (one program here, walking every chunk) computes what the
    reduce and update launches do, bit for bit, accum included."""
    two = bucket()
    one = op_cases.Bucket(two.case)  # the same tensors, from the same seed
    ops.get("triton", "adam_step")(**two.args("adam_step"))
    one_launch_step(one.args("adam_step"))
    for name, tensors in two.tensors.items():
        op_cases.assert_bitwise_equal(name, one.tensors[name], tensors)


# ------------------------------------------------------------------ pointer tables ----------

def test_pointer_table_is_cached_and_rebuilt_when_grads_move():
    params = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(3, 7))]
    opt = swd_kernels.AdamS(params, backend="triton")
    grads = [torch.randn(p.shape) for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    built = chunking.stats["pointer_tables_built"]
    opt.step()  # same grad tensors: the cached tables serve
    assert chunking.stats["pointer_tables_built"] == built
    params[1].grad = torch.randn(3, 7)  # a new address: that step builds a new table
    before = params[1].detach().clone()
    opt.step()
    assert chunking.stats["pointer_tables_built"] > built
    assert not torch.equal(params[1].detach(), before)


def test_vectorizing_alignment_is_judged_on_the_element_lists_only():
    """0-dim step counts are read one value at a time: packed ones (4-byte offsets into one
    buffer) must not turn off the 16-byte vector loads of the params, grads and states."""
    tensors = [torch.randn(64), torch.randn(100)]
    packed_steps = list(torch.zeros(2).unbind())  # the second sits 4 bytes into the buffer
    layout = chunking.chunk_layout(tensors)
    _, aligned = chunking.pointer_table(layout, [tensors, packed_steps], element_rows=1)
    assert aligned
    shifted = op_cases.laid_out(torch.randn(100), torch.float32, "unaligned")
    _, aligned = chunking.pointer_table(chunking.chunk_layout([tensors[0], shifted]),
                                        [[tensors[0], shifted], packed_steps], element_rows=1)
    assert not aligned
