"""bench/profile.py's reading of `perf script` text, on hand-written samples in both of perf's
layouts (one line per sample; thread id, then the call chain)."""

import pytest

from bench import profile

ONE_LINE = """\
   101     7f00aa sgemm_kernel (/usr/lib/libopenblas.so.0)
   101     7f00ab sgemm_kernel (/usr/lib/libopenblas.so.0)
   101     7f00ac add_kernel (/tmp/perf-99.map)
   101 ffffffff81 do_sched_yield ([kernel.kallsyms])
   102     7f00ad memset (/usr/lib/libc.so.6)
"""

CALL_CHAINS = """\
7
\t    7f00aa sgemm_kernel (/usr/lib/libopenblas.so.0)
\t    7f00b0 caller_in_mlx (/site-packages/mlx/lib/libmlx.so)

7
\t    7f00ac [unknown] ([unknown])
\t    7f00b0 caller_in_mlx (/site-packages/mlx/lib/libmlx.so)

8
\t    7f00b1 op (/site-packages/mlx/lib/libmlx.so)
"""


def test_one_line_samples_by_thread_and_library():
    shares = profile.thread_shares(ONE_LINE)
    # thread 101: 4 of 5 samples: 2 GEMM, 1 JIT code, 1 kernel; thread 102: 1 sample in libc
    assert [(tid, share) for tid, share, _ in shares] == [("101", pytest.approx(0.8)), ("102", pytest.approx(0.2))]
    assert dict(shares[0][2]) == {"libopenblas.so.0": 0.5, "JIT code": 0.25, "[kernel]": 0.25}
    assert shares[1][2] == [("libc.so.6", 1.0)]


def test_only_the_first_frame_of_a_call_chain_counts():
    shares = profile.thread_shares(CALL_CHAINS)
    assert shares[0][0] == "7" and shares[0][1] == pytest.approx(2 / 3)
    assert dict(shares[0][2]) == {"libopenblas.so.0": 0.5, "JIT code": 0.5}  # the libmlx callers do not count
    assert shares[1] == ("8", pytest.approx(1 / 3), [("libmlx.so", 1.0)])


def test_long_library_names_are_cut():
    name = profile.library_name("/tmp/mlx/libGf4IAddABHf4IMultiplyCDIf4IAddGHJf4IAddIHKf4IBroadcast_contiguous.so")
    assert len(name) == 48 and name.endswith("...")


def test_op_table_gives_ms_per_step_shares_and_sums_the_rest():
    ops = [("dot.1", 0.030, 10), ("fusion.2", 0.010, 10), ("copy.3", 0.006, 20), ("copy.4", 0.004, 10)]
    table = profile.op_table(ops, steps=10, top=2, basis="summed over threads")
    lines = table.splitlines()
    assert lines[0] == "ops' time: 5.00 ms per step (summed over threads)"
    assert lines[4] == "| dot.1 | 3.000 | 60.0% | 1 |"
    assert lines[5] == "| fusion.2 | 1.000 | 20.0% | 1 |"
    assert lines[6] == "| 2 other ops | 1.000 | 20.0% |  |"


def test_ops_on_a_backend_without_a_profile_is_one_clear_error(capsys):
    from bench.cli import main

    code = main(["profile", "--backend", "mlx", "--ops", "--ops-steps", "1", "--data", "synthetic:tiny"])
    err = capsys.readouterr().err
    assert code != 0 and "backend 'mlx' on cpu has no per-op profile" in err and "Traceback" not in err


def test_ops_of_the_reference_are_torch_profiler_ops(capsys):
    from bench.cli import main

    code = main(["profile", "--backend", "reference", "--ops", "--ops-steps", "2", "--top", "200",
                 "--data", "synthetic:tiny"])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[1].startswith("ops' time:") and "self time on the calling thread" in out
    # the original loop: one AdamW step and one backward per step
    assert "| Optimizer.step#AdamW.step |" in out and out.count("#AdamW.step | ") == 1
    row = next(line for line in out.splitlines() if line.startswith("| Optimizer.step#AdamW.step |"))
    assert row.split("|")[4].strip() == "1"
