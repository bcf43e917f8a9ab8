"""Benchmarks of swd_kernels against torch.optim.AdamW and the plain per-tensor SWD loop.

Run ``python bench/run.py`` (see its --help); ``bench/test_bench.py`` is the pytest-benchmark
suite. Not part of the installed package."""
