"""`bench sweep`: one real tiny sweep (schema, key by key), the power-law fit against exponents
worked out by hand, points that run out of memory, are refused, fail or are skipped (the child
process simulated by an injected runner), the memory watchdog on a real child, bad input, and
the sweep's subsection in `bench report`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from bench import cli, report, sweep, sweep_view
from bench.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_MODEL = ["--d-model", "8", "--n-prompts", "4", "--n-cycles", "2"]
POINT_KEYS = {"backend": str, "device": str, "axis": str, "batch_size": int, "n_columns": int,
              "original_batch": bool, "status": str, "message": (str, type(None)),
              "samples_per_sec": float, "step_time_ms": float, "compile_time_s": float,
              "peak_memory_mb": float, "peak_memory_kind": str, "percent_of_compute_floor": type(None),
              "unsteady": bool, "file": str}
FIT_KEYS = {"x": str, "exponent": float, "intercept": float, "r_squared": float, "n_points": int, "law": str}


def parse(argv: list[str]):
    return cli.build_parser().parse_args(["sweep", *argv])


# ---------------------------------------------------------------------------------------------
# A real sweep, tiny


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[int, Path]:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("sweep")
    code = main(["sweep", "--backends", "torch,reference", "--data", "synthetic:tiny", *TINY_MODEL,
                 "--batch-sizes", "8,16", "--columns", "32,984", "--seconds", "0.3", "--no-floors",
                 "--out", str(out)])
    return code, out


def test_a_real_sweep_writes_the_documented_json(tiny_sweep):
    code, out = tiny_sweep
    assert code == 0
    record = json.loads((out / "sweep_cpu.json").read_text())
    assert set(record) == {"kind", "device", "device_name", "dtype", "data", "config", "git_commit", "run_id",
                           "started_at", "load_average_1min", "command", "seconds", "max_memory_gb", "axes",
                           "points", "fits"}
    assert (record["kind"], record["device"], record["dtype"], record["data"]) == (
        "sweep", "cpu", "float32", "synthetic:tiny")
    assert isinstance(record["device_name"], str) and record["device_name"] != "unknown machine"
    assert record["config"] == {"n_prompts": 4, "d_model": 8, "n_cycles": 2}
    assert isinstance(record["git_commit"], str) and isinstance(record["started_at"], str)
    assert set(record["load_average_1min"]) == {"before", "after"}
    assert all(isinstance(v, float) for v in record["load_average_1min"].values())
    assert record["command"] == ("python -m bench sweep --backends torch,reference --data synthetic:tiny "
                                 "--batch-sizes 8,16 --columns 32,984 --seconds 0.3 --n-prompts 4 "
                                 f"--d-model 8 --n-cycles 2 --no-floors --out {out}")
    assert record["seconds"] == 0.3 and isinstance(record["max_memory_gb"], float)
    assert record["axes"] == {"batch": {"values": [8, 16], "n_columns": 984},
                              "columns": {"values": [32, 984], "batch_size": 8}}

    # Each backend: (8, 32) on the column axis, (8, 984) on both, (16, 984) on the batch axis.
    expected = [(name, axis, b, c) for name in ("torch", "reference")
                for (b, c), axes in (((8, 32), ["columns"]), ((8, 984), ["batch", "columns"]),
                                     ((16, 984), ["batch"])) for axis in axes]
    points = record["points"]
    assert [(p["backend"], p["axis"], p["batch_size"], p["n_columns"]) for p in points] == expected
    for p in points:
        assert set(p) == set(POINT_KEYS)
        for key, kind in POINT_KEYS.items():
            assert isinstance(p[key], kind), (key, p[key])
        assert p["status"] == "ok" and p["message"] is None and p["device"] == "cpu"
        assert p["samples_per_sec"] > 0 and p["step_time_ms"] > 0 and p["peak_memory_mb"] > 0
        assert p["original_batch"] is (p["batch_size"] == 8)
        child = json.loads((out / p["file"]).read_text())  # the point's own `bench time` record
        assert child["batch_size"] == p["batch_size"] and child["config"]["n_columns"] == p["n_columns"]
        assert child["config"]["d_model"] == 8 and child["samples_per_sec"] == p["samples_per_sec"]
    shared = [p for p in points if p["backend"] == "torch" and (p["batch_size"], p["n_columns"]) == (8, 984)]
    assert shared[0] == {**shared[1], "axis": "batch"}  # timed once, listed on both axes

    assert set(record["fits"]) == {"torch", "reference"}
    for name, by_axis in record["fits"].items():
        assert set(by_axis) == {"batch", "columns"}
        for axis, fit in by_axis.items():
            assert set(fit) == set(FIT_KEYS) | ({"saturation_batch"} if axis == "batch" else set())
            for key, kind in FIT_KEYS.items():
                assert isinstance(fit[key], kind), (name, axis, key)
            assert fit["n_points"] == 2 and fit["x"] == sweep_view.AXIS_X[axis]
            mine = sorted((p for p in points if p["backend"] == name and p["axis"] == axis),
                          key=lambda p: p[fit["x"]])
            two = [(p[fit["x"]], p["step_time_ms"]) for p in mine]  # two points: the line through them
            slope = math.log(two[1][1] / two[0][1]) / math.log(two[1][0] / two[0][0])
            assert fit["exponent"] == pytest.approx(slope)
        assert by_axis["batch"]["saturation_batch"] in (8, None)


def test_a_real_sweep_writes_its_table_and_chart(tiny_sweep):
    _, out = tiny_sweep
    table = (out / "sweep_cpu.md").read_text()
    assert table.startswith("# How cost grows with the work: ")
    assert "| torch | batch | 16 † | 984 |" in table and "| reference | columns | 8 | 32 |" in table
    assert "![step time and samples/s against batch and columns, log-log](sweep_cpu.png)" in table
    assert (out / "sweep_cpu.png").read_bytes().startswith(PNG_SIGNATURE)


# ---------------------------------------------------------------------------------------------
# The fit


def test_the_fit_recovers_exact_power_laws():
    xs = [8, 32, 128, 512]
    linear = sweep_view.fit_power_law(xs, [3.0 * x for x in xs])
    assert linear["exponent"] == pytest.approx(1.0) and linear["r_squared"] == pytest.approx(1.0)
    assert linear["intercept"] == pytest.approx(math.log(3.0)) and linear["n_points"] == 4
    root = sweep_view.fit_power_law(xs, [2.0 * x**0.5 for x in xs])
    assert root["exponent"] == pytest.approx(0.5) and root["r_squared"] == pytest.approx(1.0)
    flat = sweep_view.fit_power_law(xs, [7.0] * 4)
    assert flat["exponent"] == pytest.approx(0.0, abs=1e-12) and flat["r_squared"] == 1.0


def test_the_fit_of_scattered_points_matches_the_hand_computation():
    # log x = 0, 1, 2 and log y = 0, 1, 1: slope 1/2, intercept 1/6, residuals -1/6, 1/3, -1/6,
    # so the residual sum of squares is 1/6 against a total of 2/3: R² = 1 - 1/4.
    fit = sweep_view.fit_power_law([1.0, math.e, math.e**2], [1.0, math.e, math.e])
    assert fit["exponent"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(1 / 6)
    assert fit["r_squared"] == pytest.approx(0.75)


def test_fewer_than_two_distinct_sizes_give_no_law():
    assert sweep_view.fit_power_law([8], [1.0])["exponent"] is None
    assert sweep_view.fit_power_law([8, 8], [1.0, 2.0])["r_squared"] is None
    assert sweep_view.law_text("columns", sweep_view.fit_power_law([8], [1.0])) == "too few points (1) for a law"


def test_saturation_is_the_first_batch_no_larger_one_beats_by_ten_percent():
    assert sweep_view.saturation_batch([8, 32, 128, 512], [100.0, 200.0, 210.0, 205.0]) == 32
    assert sweep_view.saturation_batch([8, 32, 128, 512], [100.0, 200.0, 400.0, 800.0]) is None
    assert sweep_view.saturation_batch([8, 32, 128], [100.0, 105.0, 111.0]) == 32  # 111 > 110: 8 grew
    assert sweep_view.saturation_batch([8], [100.0]) is None


def test_laws_in_words():
    fit = {"exponent": 0.98, "r_squared": 0.999, "n_points": 5}
    assert sweep_view.law_text("columns", fit) == "step time ~ C^0.98 (R² 1.00, 5 points): linear in columns"
    fit = {"exponent": 0.05, "r_squared": 0.95, "n_points": 4, "saturation_batch": None}
    assert sweep_view.law_text("batch", fit, 512) == ("step time ~ B^0.05 (R² 0.95, 4 points): flat in batch "
                                                      "size; samples/s ~ B^0.95, still growing at batch 512")
    fit = {"exponent": 1.0, "r_squared": 0.5, "n_points": 4, "saturation_batch": 32}
    text = sweep_view.law_text("batch", fit, 512)
    assert "stops growing at batch 32" in text and text.endswith("the points do not follow one power law")


# ---------------------------------------------------------------------------------------------
# Points without a result, with the child process simulated


def fake_runner(calls: list[dict], outcomes: dict[tuple[str, int, int], sweep.Outcome],
                peak_mb: float = 100.0):
    """A `bench time` child: for a (backend, batch, columns) listed in `outcomes` it ends as told;
    otherwise it writes a record whose step time is exactly 2 ms × batch × columns / 1000."""

    def run(cmd: list[str], env: dict[str, str], timeout_s: float, limit_mb: float) -> sweep.Outcome:
        arg = dict(zip(cmd, cmd[1:]))
        key = (arg["--backend"], int(arg["--batch-size"]), int(arg["--n-columns"]))
        calls.append({"key": key, "cmd": cmd, "env": env, "limit_mb": limit_mb})
        if key in outcomes:
            return outcomes[key]
        batch, columns = key[1:]
        step_ms = 2.0 * batch * columns / 1000
        Path(arg["--json"]).write_text(json.dumps({
            "backend": key[0], "device": "cpu", "device_name": "Fake CPU", "batch_size": batch,
            "config": {"n_columns": columns}, "samples_per_sec": 1000 * batch / step_ms, "step_time_ms": step_ms,
            "compile_time_s": 0.1, "peak_memory_mb": peak_mb, "peak_memory_kind": "host RSS (whole process)",
            "unsteady": False}))
        return sweep.Outcome(0, "")

    return run


def test_points_without_a_result_are_recorded_and_left_out_of_the_fit(tmp_path, capsys):
    outcomes = {
        ("torch", 512, 984): sweep.Outcome(-9, ""),  # the kernel's out-of-memory killer
        ("torch", 8, 3936): sweep.Outcome(1, "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"),
        ("torch", 8, 1968): sweep.Outcome(None, "", stopped="memory"),  # our watchdog
        ("jax", 8, 128): sweep.Outcome(2, "error: jax cannot use device 'cpu' here"),
        ("jax", 8, 492): sweep.Outcome(1, "ZeroDivisionError: boom"),
    }
    calls: list[dict] = []
    args = parse(["--backends", "torch,jax", "--no-floors", "--max-memory-gb", "4", "--out", str(tmp_path)])
    code = sweep.run(args, runner=fake_runner(calls, outcomes))
    assert code == 1  # a point failed
    record = json.loads((tmp_path / "sweep_cpu.json").read_text())
    status = {(p["backend"], p["axis"], p["batch_size"], p["n_columns"]): p for p in record["points"]}
    assert status[("torch", "batch", 512, 984)]["status"] == "out of memory"
    assert status[("torch", "columns", 8, 3936)]["status"] == "out of memory"
    assert "CUDA out of memory" in status[("torch", "columns", 8, 3936)]["message"]
    assert status[("torch", "columns", 8, 1968)]["status"] == "out of memory"
    assert status[("torch", "columns", 8, 1968)]["message"] == "stopped: its memory passed 4 GB (--max-memory-gb)"
    assert status[("jax", "columns", 8, 128)]["status"] == "refused: error: jax cannot use device 'cpu' here"
    assert status[("jax", "columns", 8, 492)]["status"] == "failed: ZeroDivisionError: boom"
    for p in record["points"]:
        if p["status"] != "ok":
            assert p["samples_per_sec"] is None and p["step_time_ms"] is None and p["file"] is None
    assert len(calls) == 2 * 8  # every point of both backends ran: none stopped the sweep
    assert all(c["limit_mb"] == 4 * 1024 for c in calls)
    assert all(c["env"]["MALLOC_TOP_PAD_"] for c in calls)  # the fast backends' environment

    # Step time is exactly 2 µs × B × C: exponent 1 on each axis, over the points that ran only.
    fits = record["fits"]
    assert fits["torch"]["batch"]["n_points"] == 3 and fits["torch"]["columns"]["n_points"] == 3
    assert fits["jax"]["columns"]["n_points"] == 3 and fits["jax"]["batch"]["n_points"] == 4
    for by_axis in fits.values():
        for fit in by_axis.values():
            assert fit["exponent"] == pytest.approx(1.0) and fit["r_squared"] == pytest.approx(1.0)
    assert fits["jax"]["batch"]["saturation_batch"] == 8  # samples/s is flat: 1000 / (2 µs × C)
    assert (tmp_path / "sweep_cpu.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_reference_is_skipped_where_its_estimated_memory_would_not_fit(tmp_path):
    calls: list[dict] = []
    args = parse(["--backends", "reference", "--no-floors", "--max-memory-gb", "2", "--batch-sizes", "8",
                  "--columns", "128,256,984", "--out", str(tmp_path)])
    assert sweep.run(args, runner=fake_runner(calls, {}, peak_mb=1000.0)) == 0
    # Its (B, P, C, D) expansion in float32 over 6 cells: 8·128·128·128·6·4 B = 384 MiB at C=128,
    # 768 at 256, 2952 at 984; two copies of it are counted. (8, 128): 500 + 2·384 = 1268 MB runs;
    # (8, 256): 1000 measured + 2·(768 - 384) = 1768 MB runs; (8, 984): 1000 + 2·(2952 - 768) =
    # 5368 MB = 5.2 GB, over 2 GB: skipped, and no process is started for it.
    assert [c["key"] for c in calls] == [("reference", 8, 128), ("reference", 8, 256)]
    assert dict(zip(calls[0]["cmd"], calls[0]["cmd"][1:]))["--steps"] == "1" and "--warmup" in calls[0]["cmd"]
    points = json.loads((tmp_path / "sweep_cpu.json").read_text())["points"]
    skipped = [p for p in points if p["n_columns"] == 984]
    assert len(skipped) == 2 and all(p["status"] == "skipped: would need ~5.2 GB, over the 2.0 GB allowed"
                                     for p in skipped)
    assert sweep.reference_estimate_mb(8, 984, sweep.spec.TromptConfig(), "float32", [(8, 256, 1000.0)]) == 5368


def test_a_sweep_with_no_result_at_all_says_so(tmp_path, capsys):
    args = parse(["--backends", "torch", "--no-floors", "--batch-sizes", "8", "--columns", "984",
                  "--out", str(tmp_path)])
    assert sweep.run(args, runner=lambda *_: sweep.Outcome(2, "error: refused")) == 1
    assert "error: no point produced a result" in capsys.readouterr().err


def test_status_of_each_way_a_child_can_end():
    assert sweep.status_of(sweep.Outcome(137, ""), 4, 60)[0] == "out of memory"
    assert sweep.status_of(sweep.Outcome(1, "MemoryError"), 4, 60)[0] == "out of memory"
    assert sweep.status_of(sweep.Outcome(1, "jaxlib.XlaRuntimeError: RESOURCE_EXHAUSTED: ..."), 4, 60)[0] == (
        "out of memory")
    assert sweep.status_of(sweep.Outcome(2, "error: bad"), 4, 60) == ("refused: error: bad", "error: bad")
    assert sweep.status_of(sweep.Outcome(3, ""), 4, 60)[0] == "failed: exit code 3"
    assert sweep.status_of(sweep.Outcome(None, "x", stopped="timeout"), 4, 60)[0] == (
        "failed: ran over 60 s (--point-timeout)")


def test_the_watchdog_stops_a_real_child_over_the_memory_limit_or_the_time_limit():
    hog = [sys.executable, "-c", "import time\nblock = b'x' * (400 * 2**20)\ntime.sleep(60)"]
    assert sweep.run_child(hog, {}, timeout_s=60, limit_mb=150).stopped == "memory"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert sweep.run_child(sleeper, {}, timeout_s=0.5, limit_mb=10_000).stopped == "timeout"
    talker = [sys.executable, "-c", "import sys; print('one', file=sys.stderr); print('last', file=sys.stderr)"
              "; sys.exit(2)"]
    assert sweep.run_child(talker, {}, timeout_s=60, limit_mb=10_000) == sweep.Outcome(2, "last")


# ---------------------------------------------------------------------------------------------
# Bad input


def exit_code(argv: list[str]) -> int:
    """main's return value, or the code of the SystemExit argparse raises for a bad flag."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv, message", [
    (["--backends", "nope"], "unknown backend(s) nope"),
    (["--batch-sizes", "8,0"], "must be >= 1, got 0"),
    (["--batch-sizes", "8,x"], "expected an integer, got 'x'"),
    (["--columns", ""], "expected comma-separated positive integers, got ''"),
    (["--columns", "128,,984"], "expected comma-separated positive integers"),
    (["--seconds", "0"], "must be > 0"),
    (["--data", "some/dir"], "the column axis needs synthetic data"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    assert exit_code(["sweep", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_bench_time_refuses_a_column_count_real_data_lacks(tmp_path, capsys):
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    for split, rows in (("train", 20), ("val", 4)):
        np.savez(tmp_path / f"{split}.npz", X=np.ones((rows, 5), np.float32), Y=np.arange(rows, dtype=np.float32))
    assert main(["time", "--backend", "torch", "--data", str(tmp_path), "--n-columns", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --n-columns 40, but {tmp_path} has 5 columns"


# ---------------------------------------------------------------------------------------------
# In the report


def test_the_report_shows_the_sweep_table_laws_and_chart(tmp_path, capsys):
    results = tmp_path / "results"
    args = parse(["--backends", "torch", "--no-floors", "--batch-sizes", "8,32", "--columns", "128,984",
                  "--out", str(results)])
    assert sweep.run(args, runner=fake_runner([], {})) == 0
    capsys.readouterr()
    out = tmp_path / "docs" / "REPORT.md"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert "skipped" not in capsys.readouterr().err  # the sweep is not mistaken for a bad result file
    text = out.read_text()
    section = text[text.index(report.BEGIN):text.index(report.END)]
    assert "### How cost grows with the work: Fake CPU, cpu" in section
    assert f"Made by `python -m bench sweep --backends torch --batch-sizes 8,32 --columns 128,984 --no-floors " \
           f"--out {results}`" in section
    assert "| torch | batch | 32 † | 984 | 508.1 | 62.98 | 100 | ok |" in section  # 2 µs × 32 × 984
    assert "- torch, columns: step time ~ C^1.00 (R² 1.00, 2 points): linear in columns" in section
    assert "![step time and samples/s against batch and columns, log-log](img/sweep_cpu.png)" in section
    assert (out.parent / "img" / "sweep_cpu.png").read_bytes().startswith(PNG_SIGNATURE)
