"""The triton backend's GPU-side machinery, run as far as Triton's CPU interpreter allows:
the reduction's four sums and their fixed order, CUDA-graph capture of a step whose grads
moved, per-stream workspaces, the device guard, the chunk size and the one-launch grid size.

Capture is simulated by forcing ``streams.capturing`` (what every capture decision asks) on:
the copies a graph would record then run at once, so the step's numbers can be checked
against the torch backend, and what a graph must keep (its tables, their host buffers, fresh
zeroed workspaces) can be checked directly. Streams are simulated by forcing
``streams.stream_key``. Run: TRITON_INTERPRET=1 python -m pytest tests/test_triton_gpu_paths.py
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import swd_kernels  # noqa: E402
from problems import Group, Param, assert_matches_oracle, run_steps, start  # noqa: E402
from swd_kernels import ops  # noqa: E402
from tolerance import assert_close, tolerance_for  # noqa: E402

pytest.importorskip("triton")
triton_backend = pytest.importorskip("swd_kernels.backends.triton")
from swd_kernels.backends.triton import (adam, chunking, device_tables, occupancy,  # noqa: E402
                                         streams, workspace)

if not triton_backend.kernels_interpreted():
    pytest.skip("another test module imported triton before TRITON_INTERPRET=1 was set: run "
                "this file in its own process", allow_module_level=True)

H100 = occupancy.SmLimits(registers=65536, threads=2048, shared_memory=233472, blocks=32,
                          count=132)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 1024 elements, blocks of 512: a few thousand elements span several chunks
    (the interpreter runs every block one numpy op at a time)."""
    monkeypatch.setattr(chunking, "CHUNK", 1024)
    monkeypatch.setattr(chunking, "BLOCK", 512)


def fresh(shape, gen, scale=1.0):
    return torch.randn(shape, generator=gen) * scale


def adam_bucket(seed, sizes=((4097,), (1,), (0,), (3, 4, 5, 6), (2500,))):
    """Random grads, moments, running sums and step counts (t differs per tensor), and an
    accumulator that already holds an earlier bucket's share."""
    gen = torch.Generator().manual_seed(seed)
    v = [fresh(s, gen).abs() * 1e-2 for s in sizes]
    return dict(
        grads=[fresh(s, gen) for s in sizes], exp_avg_sqs=v,
        max_exp_avg_sqs=[x * (1.5 if i % 2 else 0.5) for i, x in enumerate(v)],
        state_steps=[torch.tensor(float(i % 3 * 7)) for i in range(len(sizes))],
        v_sums=[x.sum(dtype=torch.float64) for x in v],
        accum=torch.tensor([3e-2, 100.0, 5.0, 0.25], dtype=torch.float64))


def clone(bucket):
    return {k: [t.clone() for t in v] if isinstance(v, list) else v.clone()
            for k, v in bucket.items()}


def call(backend, name, arguments, **kwargs):
    args = {**{k: v for k, v in arguments.items() if k in ops.ARG_NAMES[name]}, **kwargs}
    ops.get(backend, name)(**args)


def amp(grad_scale, found_inf):
    return dict(grad_scale=None if grad_scale is None else torch.tensor(grad_scale),
                found_inf=None if found_inf is None else torch.tensor(found_inf))


# ------------------------------------------------------------------ the reduction ------------

@pytest.mark.parametrize("amsgrad", [False, True], ids=["adams", "amsgrad"])
@pytest.mark.parametrize("grad_scale,found_inf", [(None, None), (1024.0, 0.0), (8.0, 1.0)],
                         ids=["plain", "grad_scale", "found_inf"])
def test_reduce_adds_the_four_sums_of_the_reference(amsgrad, grad_scale, found_inf):
    """accum = [sum of v_hat, count, sum of g^2, clip term] (ops.py): each added to what an
    earlier bucket left, as the torch backend adds it, over tensors of mixed step counts that
    span several chunks, one of one element and one of none."""
    bucket = adam_bucket(seed=1)
    if grad_scale:
        bucket["grads"] = [g * grad_scale for g in bucket["grads"]]
    ref, out = clone(bucket), clone(bucket)
    kw = dict(beta2=0.999, amsgrad=amsgrad, **amp(grad_scale, found_inf))
    call("torch", "adam_reduce", ref, **kw)
    call("triton", "adam_reduce", out, **kw)
    # float64 sums of fp32 block sums against the torch backend's float64 norms
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=1e-6, atol=0)
    assert out["accum"][ops.COUNT] == 100 + sum(g.numel() for g in bucket["grads"])
    if amsgrad:  # the clip term is AdamS's alone
        assert out["accum"][ops.CLIP_TERM] == bucket["accum"][ops.CLIP_TERM]
    for r, o, before in zip(ref["v_sums"], out["v_sums"], bucket["v_sums"]):
        if found_inf or amsgrad:
            assert torch.equal(o, before)
        else:
            torch.testing.assert_close(o, r, rtol=1e-6, atol=0)
    for name in ("grads", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"):
        assert all(torch.equal(a, b) for a, b in zip(out[name], bucket[name])), name


def test_accum_of_another_shape_is_refused_before_anything_changes():
    bucket = adam_bucket(seed=2)
    for accum in (torch.zeros(2, dtype=torch.float64), torch.zeros(4),
                  torch.zeros(8, dtype=torch.float64)[::2]):
        out = clone(bucket)
        out["accum"] = accum
        with pytest.raises(RuntimeError, match=r"accum must be a contiguous float64 tensor "
                                               r"of 4 elements \[sum of v_hat, count, sum of "
                                               r"g\^2, clip term\] on cpu"):
            call("triton", "adam_reduce", out, beta2=0.999, amsgrad=False, grad_scale=None,
                 found_inf=None)
        assert all(torch.equal(a, b) for a, b in zip(out["v_sums"], bucket["v_sums"]))
        assert not accum.any()


def run_adams(amsgrad, seed=0, steps=3):
    groups = [Group([Param((4097,), 1.0), Param((2500,), 0.5), Param((1,), 2.0),
                     Param((1024,), 1.5)], dict(lr=1e-2, weight_decay=5e-2))]
    return run_steps(start("adams", groups, "triton", seed=seed, amsgrad=amsgrad), steps)


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adams", "amsgrad"])
def test_reduction_is_bitwise_repeatable_and_chunking_moves_only_rounding(amsgrad,
                                                                          monkeypatch):
    """Same inputs, same chunks: bitwise the same params, state and v_bar (no float atomics,
    a fixed order). Other chunks regroup the float64 partials: the oracle tolerance apart."""
    first, second = run_adams(amsgrad), run_adams(amsgrad)
    assert chunking.chunk_layout([p.grad for p in first.params]).n_chunks == 5 + 3 + 1 + 1
    for a, b in zip(first.params, second.params):
        assert torch.equal(a, b)
        for key, value in first.optimizer.state[a].items():
            assert torch.equal(value, second.optimizer.state[b][key]), key
    assert torch.equal(first.optimizer.vhat_mean(), second.optimizer.vhat_mean())
    assert_matches_oracle(first)
    monkeypatch.setattr(chunking, "CHUNK", 2048)
    other = run_adams(amsgrad)
    assert chunking.chunk_layout([p.grad for p in other.params]).n_chunks == 3 + 2 + 1 + 1
    assert_matches_oracle(other)
    tolerance = tolerance_for("adams", torch.float32, first.oracle.groups, steps=3)
    assert_close("params", list(other.params), [p.detach().double() for p in first.params],
                 torch.float32, tolerance)


def test_counters_are_back_at_zero_after_every_launch():
    """A launch's last arrivals reset the counters they used: a counter left non-zero would
    corrupt every later step on that stream."""
    bucket = adam_bucket(seed=3)
    gen = torch.Generator().manual_seed(3)
    params = [fresh(g.shape, gen) for g in bucket["grads"]]
    exp_avgs = [fresh(g.shape, gen) * 0.1 for g in bucket["grads"]]
    adam_kw = dict(lr_tensor=None, lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8,
                   decay_power=0.5, decay_eps=0.0, maximize=False, grad_scale=None)
    for amsgrad in (False, True):
        for found_inf in (None, torch.tensor(1.0)):
            args = dict(bucket, params=params, exp_avgs=exp_avgs, amsgrad=amsgrad,
                        found_inf=found_inf, **adam_kw)
            call("triton", "adam_reduce", args)
            call("triton", "adam_update", args)
            call("triton", "adam_step", args)
            one_launch_step(args)
    call("triton", "adai_update", dict(bucket, params=params, exp_avgs=exp_avgs,
                                       beta1_prods=[torch.ones_like(p) for p in params]),
         lr_tensor=None, lr=0.1, beta0=0.1, beta2=0.99, weight_decay=0.0, eps=1e-3,
         maximize=False, grad_scale=None, found_inf=None)
    call("triton", "sgd_update", dict(bucket, params=params, momentum_buffers=exp_avgs),
         lr_tensor=None, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
         nesterov=False, maximize=False, grad_scale=None, found_inf=None)
    used = workspace._workspaces[(torch.device("cpu"), None)]
    assert not used.counters.any(), used.counters.nonzero().flatten().tolist()


def one_launch_step(arguments):
    """``adam_step`` as the one-launch kernel with a single program (the interpreter runs
    programs one after another, so more would wait at the grid barrier forever)."""
    a = {k: v for k, v in arguments.items() if k in ops.ARG_NAMES["adam_step"]}
    launch = adam.adam_launch(
        a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["max_exp_avg_sqs"],
        a["state_steps"], a["v_sums"], a["accum"], a["grad_scale"], a["found_inf"],
        a["amsgrad"])
    update_args = adam.adam_update_args(
        a["params"], a["exp_avg_sqs"], a["accum"], a["lr_tensor"], a["lr"], a["beta1"],
        a["beta2"], a["weight_decay"], a["eps"], a["decay_power"], a["decay_eps"],
        a["amsgrad"], a["maximize"])
    adam.adam_step_one_launch(launch, update_args, programs=1)


# ------------------------------------------------------------------ CUDA-graph capture --------

@pytest.fixture
def capture(monkeypatch):
    """``capture.on()``: from now on every step is 'being captured' (streams.capturing)."""
    class Switch:
        active = False

        def on(self):
            self.active = True

    switch = Switch()
    monkeypatch.setattr(streams, "capturing", lambda device: switch.active)
    return switch


OPTIMIZERS = {
    "AdamS": lambda ps, b: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=0.1, backend=b),
    "AMSGradS-2groups": lambda ps, b: swd_kernels.AMSGradS(
        [{"params": ps[:1], "weight_decay": 0.0}, {"params": ps[1:]}], lr=1e-2,
        weight_decay=0.1, backend=b),
    "AdaiS": lambda ps, b: swd_kernels.AdaiS(ps, lr=0.1, weight_decay=1e-2, backend=b),
    "SGDS": lambda ps, b: swd_kernels.SGDS(ps, lr=0.1, momentum=0.9, weight_decay=1e-2,
                                           backend=b),
}


def train(make, backend, capture=None, steps=3):
    """Steps with grads set to None and reallocated before each step (torch's whole-step
    capture recipe: backward then allocates them at new addresses inside the graph); the
    last step 'captured' when ``capture`` is given."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(fresh(s, gen)) for s in [(17,), (33, 70), (2100,)]]
    opt = make(params, backend)
    grad_gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad = fresh(p.shape, grad_gen)
        if capture is not None and step == steps - 1:
            capture.on()
        opt.step()
    return params, opt


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_captured_step_with_grads_at_new_addresses_matches_torch(name, capture):
    """A capture that meets grads at new addresses builds their pointer tables inside the
    graph (no 'run it eagerly first' error); the graph reads them at every replay, so they
    are kept, with the host bytes every replay copies again."""
    built = chunking.stats["pointer_tables_built"]
    ref_params, ref_opt = train(OPTIMIZERS[name], "torch")
    params, opt = train(OPTIMIZERS[name], "triton", capture)
    assert chunking.stats["pointer_tables_built"] > built
    tolerance = tolerance_for("adais" if name == "AdaiS" else "adams", torch.float32,
                              [{"eps": 1e-3}], steps=3)
    for r, p in zip(ref_params, params):
        assert_close("params", [p.detach()], [r.detach().double()], torch.float32, tolerance)
        for key, value in ref_opt.state[r].items():
            assert_close(key, [opt.state[p][key]], [value.double()], value.dtype
                         if value.dtype == torch.float64 else torch.float32, tolerance)
    graph_tables = [entry.table for layout in chunking._layouts.values()
                    for entry in layout.pointer_tables.values() if entry.table.used_in_graph]
    assert graph_tables and all(t.host.numel() == t.tensor.numel() for t in graph_tables)


def test_tables_a_graph_reads_are_never_evicted(capture, monkeypatch):
    monkeypatch.setattr(chunking, "POINTER_TABLES_PER_LAYOUT", 1)
    params, opt = train(OPTIMIZERS["AdamS"], "triton", capture, steps=1)
    kept = {id(entry) for layout in chunking._layouts.values()
            for entry in layout.pointer_tables.values() if entry.table.used_in_graph}
    capture.active = False
    grad_gen = torch.Generator().manual_seed(5)
    for _ in range(3):  # new grads each step: a new table each, beyond the limit of 1
        for p in params:
            p.grad = fresh(p.shape, grad_gen)
        opt.step()
    left = {id(entry) for layout in chunking._layouts.values()
            for entry in layout.pointer_tables.values()}
    assert kept and kept <= left


def test_one_launch_step_under_capture_matches_torch(capture):
    gen = torch.Generator().manual_seed(6)
    bucket = adam_bucket(seed=6)
    bucket["params"] = [fresh(g.shape, gen) for g in bucket["grads"]]
    bucket["exp_avgs"] = [fresh(g.shape, gen) * 0.1 for g in bucket["grads"]]
    kw = dict(lr_tensor=torch.tensor(0.02, dtype=torch.float64), lr=0.0, beta1=0.9,
              beta2=0.999, weight_decay=0.1, eps=1e-8, decay_power=0.5, decay_eps=1e-6,
              amsgrad=False, maximize=False, grad_scale=None, found_inf=None)
    ref, out = clone(bucket), clone(bucket)
    call("torch", "adam_step", ref, **kw)
    capture.on()
    allocated = workspace.stats["allocated"]
    one_launch_step(dict(out, **kw))
    assert workspace.stats["allocated"] == allocated + 1  # the graph's own, zeroed
    for name in ("params", "exp_avgs", "exp_avg_sqs", "v_sums", "state_steps"):
        for r, o in zip(ref[name], out[name]):
            torch.testing.assert_close(o, r, rtol=2e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=1e-6, atol=0)


def test_device_table_is_filled_for_every_use(capture, monkeypatch):
    """Eager: one copy, then reuse; a graph that reads a table not filled for its stream
    records its own copy (each replay copies again), and eager work after such a graph
    copies once itself, since a captured copy runs only when the graph replays."""
    stream = {"key": "s1"}
    monkeypatch.setattr(streams, "stream_key", lambda device: stream["key"])
    copies = device_tables.stats["copies"]
    table = device_tables.DeviceTable([3, 1, 4, 1, 5], torch.device("cpu"))
    assert table.ready().tolist() == [3, 1, 4, 1, 5] and table.ready() is table.tensor
    assert device_tables.stats["copies"] == copies + 1
    stream["key"] = "s2"  # a second stream waits for the first's copy (on CUDA) and reuses it
    table.ready()
    assert device_tables.stats["copies"] == copies + 1
    capture.on()
    table.ready()  # filled for s2 before the capture began: the graph reads the bytes there
    assert table.used_in_graph and device_tables.stats["copies"] == copies + 1
    stream["key"] = "capture stream"
    table.ready()
    table.ready()
    assert device_tables.stats["copies"] == copies + 3

    captured = device_tables.DeviceTable([2, 7], torch.device("cpu"))
    captured.ready()
    assert captured.used_in_graph and device_tables.stats["copies"] == copies + 4
    capture.active = False
    captured.ready()
    captured.ready()
    assert device_tables.stats["copies"] == copies + 5
    assert captured.ready().tolist() == [2, 7]


# ------------------------------------------------------------------ streams and devices -------

def test_workspaces_are_kept_per_stream_and_fresh_in_a_graph(capture, monkeypatch):
    stream = {"key": "s1"}
    monkeypatch.setattr(streams, "stream_key", lambda device: stream["key"])
    cpu = torch.device("cpu")
    first = workspace.workspace(cpu, tensors=4, chunks=10)
    assert workspace.workspace(cpu, tensors=2, chunks=3) is first
    stream["key"] = "s2"  # two optimizers on two streams never share partials or counters
    second = workspace.workspace(cpu, tensors=4, chunks=10)
    assert second is not first
    grown = workspace.workspace(cpu, tensors=9, chunks=10)  # a larger bucket on s2
    assert grown.tensors == 9 and grown.chunks == 10
    assert workspace.workspace(cpu, tensors=4, chunks=10) is grown
    capture.on()
    graph_owned = [workspace.workspace(cpu, tensors=4, chunks=10) for _ in range(2)]
    assert all(w not in (first, grown) for w in graph_owned)
    assert graph_owned[0] is not graph_owned[1]
    assert not any(w.counters.any() for w in graph_owned)


def test_every_launch_enters_its_buckets_device(monkeypatch):
    """Triton launches on the current device: each launcher switches to the bucket's."""
    entered = []
    real = streams.on_device

    def record(device):
        entered.append(device)
        return real(device)
    monkeypatch.setattr(streams, "on_device", record)
    params, opt = train(OPTIMIZERS["AdamS"], "triton", steps=1)
    assert entered == [torch.device("cpu")] * 2  # the reduction and the update
    entered.clear()
    train(OPTIMIZERS["SGDS"], "triton", steps=1)
    assert entered == [torch.device("cpu")]


def test_a_steady_step_builds_copies_and_allocates_nothing():
    """The host work a repeated step reuses: layouts, pointer tables, device copies and
    workspaces are all found in the caches."""
    params, opt = train(OPTIMIZERS["AdamS"], "triton", steps=1)
    opt.step()
    counts = (dict(chunking.stats), dict(device_tables.stats), dict(workspace.stats))
    opt.step()
    assert (chunking.stats, device_tables.stats, workspace.stats) == counts


def test_a_list_of_mixed_dtypes_is_refused_by_name():
    bucket = adam_bucket(seed=7)
    bucket["grads"][1] = bucket["grads"][1].double()
    with pytest.raises(TypeError, match="every tensor of grads in one dtype"):
        call("triton", "adam_reduce", bucket, beta2=0.999, amsgrad=False, grad_scale=None,
             found_inf=None)


def test_one_launch_switch_runs_two_launches_off_a_gpu(monkeypatch):
    """The interpreter runs programs one after another, where a grid barrier would wait
    forever: with the switch on, adam_step still runs (as two launches) and still matches."""
    monkeypatch.setenv(adam.ONE_LAUNCH_SWITCH, "1")
    ref_params, _ = train(OPTIMIZERS["AdamS"], "torch", steps=2)
    params, _ = train(OPTIMIZERS["AdamS"], "triton", steps=2)
    tolerance = tolerance_for("adams", torch.float32, [], steps=2)
    assert_close("params", [p.detach() for p in params],
                 [p.detach().double() for p in ref_params], torch.float32, tolerance)


# ------------------------------------------------------------------ sizes ---------------------

@pytest.mark.parametrize("numels,sm_count,chunk", [
    ([1 << 20], 132, 4096),         # 256 chunks even at the floor (528 wanted): the floor
    ([100_000_000], 132, 65536),    # 1,526 chunks at the largest size
    ([30_000_000], 132, 32768),     # 458 chunks at 64 Ki, 916 at 32 Ki
    ([100] * 1000, 132, 65536),     # 1,000 tensors: a chunk each already
    ([1 << 20], None, 1024),        # no SM count (the interpreter): CHUNK (1024 here)
])
def test_chunk_size_gives_every_sm_several_chunks(numels, sm_count, chunk, monkeypatch):
    monkeypatch.setattr(chunking, "CHUNK", 65536 if sm_count else 1024)
    assert chunking.choose_chunk(numels, sm_count) == chunk


def test_chunk_size_is_the_largest_that_fills_the_gpu(monkeypatch):
    monkeypatch.setattr(chunking, "CHUNK", 65536)
    gen = torch.Generator().manual_seed(8)
    for _ in range(200):
        numels = torch.randint(0, 1 << 22, (int(torch.randint(1, 40, (1,), generator=gen)),),
                               generator=gen).tolist()
        sm_count = int(torch.randint(1, 200, (1,), generator=gen))
        chunk = chunking.choose_chunk(numels, sm_count)
        assert chunk in (4096, 8192, 16384, 32768, 65536)
        wanted = chunking.CHUNKS_PER_SM * sm_count
        if chunk > chunking.MIN_CHUNK:
            assert chunking.count_chunks(numels, chunk) >= wanted
        if chunk < chunking.CHUNK:
            assert chunking.count_chunks(numels, 2 * chunk) < wanted


def test_layout_covers_every_element_once(monkeypatch):
    monkeypatch.setattr(chunking, "_sm_count", lambda device: 7)
    monkeypatch.setattr(chunking, "CHUNK", 65536)
    numels = [100_000, 0, 1, 65536, 70_000]
    layout = chunking.chunk_layout([torch.empty(n) for n in numels])
    # 28 chunks wanted: 18 at 16 Ki (7 + 1 + 1 + 4 + 5), 32 at 8 Ki
    assert layout.chunk == chunking.choose_chunk(numels, 7) == 8192
    tensor, start = layout.chunk_tensor.tolist(), layout.chunk_start.tolist()
    first = layout.first_chunk.tolist()
    assert layout.numels.tolist() == numels and layout.total_numel == sum(numels)
    for index, n in enumerate(numels):
        mine = range(first[index], first[index + 1])
        assert len(mine) >= 1 and all(tensor[c] == index for c in mine)
        assert [start[c] for c in mine] == list(range(0, max(n, 1), layout.chunk))
    assert layout.n_chunks == len(tensor) == first[-1]


@pytest.mark.parametrize("registers,shared,warps,programs", [
    (32, 0, 8, 8),         # the thread limit: 2048 / 256
    (64, 0, 8, 4),         # 2,048 registers a warp: 32 warps
    (40, 0, 4, 12),        # 1,280 a warp: 12 warps a register partition, 48 in all
    (255, 0, 4, 2),        # 8,160 rounds to 8,192 a warp: 2 a partition, 8 in all
    (168, 0, 8, 1),        # 5,376 a warp: 3 a partition, 12 in all: one program of 8
    (32, 100 * 1024, 4, 2),  # shared memory: 233,472 / (102,400 + 1,024)
    (16, 0, 1, 32),        # the block limit of sm_90
])
def test_resident_programs_follow_the_cuda_occupancy_rules(registers, shared, warps,
                                                           programs):
    """sm_90 (H100/H200) values of NVIDIA's occupancy calculator."""
    assert occupancy.programs_per_sm(registers, shared, warps, H100) == programs
