"""`python -m bench report`: hand-made result files in, markdown tables and charts out.

Every expected ratio below is computed by hand from the samples/s written into the files.
"""

import json
from pathlib import Path

from bench.cli import main
from bench.report import BEGIN, END

TINY = {"n_columns": 984, "n_prompts": 8, "d_model": 16, "n_cycles": 2}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def result(backend: str, sps: float, machine: str = "Machine A", dtype: str = "float32",
           options: dict | None = None, batch: int = 8, commit: str = "abc1234",
           equivalence: dict | None = None) -> dict:
    return {"backend": backend, "device": "cpu", "device_name": machine, "dtype": dtype, "batch_size": batch,
            "options": options or {}, "config": TINY, "data": "synthetic:tiny", "git_commit": commit,
            "samples_per_sec": sps, "step_time_ms": 1000 * batch / sps, "compile_time_s": 0.5,
            "peak_memory_mb": 100.0, "equivalence": equivalence}


def write(folder: Path, name: str, obj: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(obj if isinstance(obj, str) else json.dumps(obj))


def report(results: Path, out: Path) -> int:
    return main(["report", "--results", str(results), "--out", str(out)])


def section(out: Path) -> str:
    text = out.read_text()
    return text[text.index(BEGIN):text.index(END)]


def tables(out: Path) -> dict[str, list[list[str]]]:
    """{machine heading: table rows as lists of cells} (several tables of a machine concatenated)."""
    found: dict[str, list[list[str]]] = {}
    machine = None
    for line in section(out).splitlines():
        if line.startswith("### "):
            machine = line[4:]
            found[machine] = []
        elif machine and line.startswith("| ") and not line.startswith("| backend"):
            found[machine].append([c.strip() for c in line.strip("|").split(" | ")])
    return found


def ratio_of(rows: list[list[str]], file_name: str) -> str:
    row = next(r for r in rows if r[-1] == f"`{file_name}`")
    return row[2]


def test_speedup_is_against_the_reference_of_the_same_machine(tmp_path):
    res = tmp_path / "results"
    write(res, "a-ref.json", result("reference", 2.0, "Machine A"))
    write(res, "a-torch.json", result("torch", 300.0, "Machine A"))
    write(res, "b-ref.json", result("reference", 4.0, "Machine B"))
    write(res, "b-jax.json", result("jax", 100.0, "Machine B", options={"parallel": "pmap"}))
    out = tmp_path / "docs" / "REPORT.md"
    assert report(res, out) == 0
    found = tables(out)
    assert set(found) == {"Machine A", "Machine B"}
    assert ratio_of(found["Machine A"], "a-torch.json") == "150.00"  # 300 / 2
    assert ratio_of(found["Machine B"], "b-jax.json") == "25.00"  # 100 / 4, never 100 / 2
    assert ratio_of(found["Machine A"], "a-ref.json") == "1.00"
    assert found["Machine A"][0][0] == "reference float32"  # the yardstick comes first
    assert "jax float32 (parallel=pmap)" in [r[0] for r in found["Machine B"]]


def test_no_ratio_across_dtypes_or_settings(tmp_path):
    res = tmp_path / "results"
    write(res, "ref32.json", result("reference", 2.0))
    write(res, "torch64.json", result("torch", 10.0, dtype="float64"))
    write(res, "torch32-b16.json", result("torch", 50.0, batch=16))
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    rows = tables(out)["Machine A"]
    assert ratio_of(rows, "torch64.json") == "-"  # no float64 reference on this machine
    assert ratio_of(rows, "torch32-b16.json") == "-"  # batch 16 is another setting
    assert "batch 16" in section(out) and "batch 8" in section(out)  # one table per setting


def test_reference_of_the_same_commit_is_preferred(tmp_path):
    res = tmp_path / "results"
    write(res, "ref-old.json", result("reference", 10.0, commit="aaaaaaa"))  # listed first (faster)
    write(res, "ref-new.json", result("reference", 5.0, commit="bbbbbbb"))
    write(res, "torch-new.json", result("torch", 50.0, commit="bbbbbbb"))
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    assert ratio_of(tables(out)["Machine A"], "torch-new.json") == "10.00"  # 50 / 5


def test_numbers_and_equivalence_are_shown(tmp_path):
    res = tmp_path / "results"
    eq = {"verdict": "pass", "worst": 3.2e-5}
    write(res, "t.json", {**result("torch", 1234.5, equivalence=eq),
                          "floors": {"percent_of_compute_floor": 12.34, "percent_of_memory_floor": 56.78},
                          "repeat_spread": 1.0149, "processes": {"count": 2, "spread": 1.2351}})
    write(res, "u.json", result("torch", 12.0))  # one process, no repeat spread recorded
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    row, one_process = tables(out)["Machine A"]
    assert row[1] == "1,234.5"
    assert row[3] == f"{1000 * 8 / 1234.5:,.2f}"  # step ms as written in the file
    assert row[6:10] == ["12.3", "56.8", "1.24 / 1.01", "pass (3.2e-05)"]
    assert one_process[8:10] == ["- / -", "not checked"]


def test_unreadable_files_are_skipped_with_one_line_each(tmp_path, capsys):
    res = tmp_path / "results"
    write(res, "good.json", result("torch", 10.0))
    write(res, "broken.json", "{not json")
    write(res, "verdict.json", {"verdict": "pass", "max_rel_dev": 1e-6})  # a `bench check` file
    write(res, "negative.json", result("torch", -1.0))
    write(res, "text-speed.json", {**result("torch", 1.0), "samples_per_sec": "fast"})
    write(res, "text-batch.json", {**result("torch", 1.0), "batch_size": "8"})
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5
    for name in ("broken.json", "verdict.json", "negative.json", "text-speed.json", "text-batch.json"):
        assert sum(name in line for line in err) == 1
    assert [r[-1] for r in tables(out)["Machine A"]] == ["`good.json`"]


def test_nothing_to_report_is_a_one_line_error(tmp_path, capsys):
    res = tmp_path / "results"
    write(res, "broken.json", "[]")
    assert report(res, tmp_path / "REPORT.md") == 2
    assert report(tmp_path / "missing", tmp_path / "REPORT.md") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: results directory") and len(err) == 3
    assert not (tmp_path / "REPORT.md").exists()


def test_only_the_results_section_is_rewritten(tmp_path):
    res = tmp_path / "results"
    write(res, "ref.json", result("reference", 2.0))
    out = tmp_path / "REPORT.md"
    before = "# Title\n\nintro\n\n" + BEGIN + "\nold numbers\n" + END + "\n\n## Torch\n\nother text\n"
    out.write_text(before)
    assert report(res, out) == 0
    first = out.read_text()
    assert first.startswith("# Title\n\nintro\n\n" + BEGIN + "\n")
    assert first.endswith(END + "\n\n## Torch\n\nother text\n")
    assert "old numbers" not in first and "reference float32" in first
    assert report(res, out) == 0
    assert out.read_text() == first  # idempotent
    assert not [p.name for p in out.parent.rglob(".*")]  # no temporary files left behind


def test_markers_are_created_after_the_title(tmp_path):
    res = tmp_path / "results"
    write(res, "ref.json", result("reference", 2.0))
    out = tmp_path / "REPORT.md"
    out.write_text("# Report\n\n## Torch section\n\nkept\n")
    assert report(res, out) == 0
    text = out.read_text()
    assert text.startswith("# Report\n\n" + BEGIN)
    assert text.index(END) < text.index("## Torch section") and text.endswith("kept\n")
    fresh = tmp_path / "new" / "REPORT.md"
    assert report(res, fresh) == 0
    assert fresh.read_text().startswith("# ") and BEGIN in fresh.read_text()


def test_malformed_markers_leave_the_file_alone(tmp_path, capsys):
    res = tmp_path / "results"
    write(res, "ref.json", result("reference", 2.0))
    out = tmp_path / "REPORT.md"
    for broken in (f"# R\n{BEGIN}\nno end\n", f"# R\n{END}\n{BEGIN}\n", f"# R\n{BEGIN}{END}{BEGIN}{END}\n"):
        out.write_text(broken)
        assert report(res, out) == 2
        assert out.read_text() == broken
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_charts_one_per_machine_and_side_by_side(tmp_path):
    res = tmp_path / "results"
    write(res, "a.json", result("torch", 30.0, "Tesla T4"))
    write(res, "b.json", result("jax", 40.0, "TPU v5 lite"))
    out = tmp_path / "docs" / "REPORT.md"
    assert report(res, out) == 0
    links = [line.split("](")[1].rstrip(")") for line in section(out).splitlines() if line.startswith("![")]
    assert len(links) == 3  # each machine, and both side by side
    for link in links:
        assert (out.parent / link).read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (out.parent / "img").iterdir()) == [
        "results_overview.png", "results_tesla-t4.png", "results_tpu-v5-lite.png"]


def test_ladder_files_are_listed(tmp_path):
    res = tmp_path / "results"
    write(res, "ladder_torch_cuda.json", {"ladder": "torch", "device": "cuda", "device_name": "Tesla T4",
                                          "smoke": False, "rows": []})
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    assert "`ladder_torch_cuda.json`: torch on Tesla T4 (cuda); table `ladder_torch_cuda.md`" in section(out)


def test_smoke_ladders_are_left_out_unless_asked(tmp_path, capsys):
    res = tmp_path / "results"
    write(res, "a-ref.json", result("reference", 2.0))
    write(res, "ladder_torch_cpu_smoke.json", {"ladder": "torch", "device": "cpu", "device_name": "Machine A",
                                               "smoke": True, "rows": []})
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    assert "ladder_torch_cpu_smoke" not in section(out)
    assert "skipped" in capsys.readouterr().err
    assert main(["report", "--results", str(res), "--out", str(out), "--include-smoke"]) == 0
    assert "`ladder_torch_cpu_smoke.json`" in section(out) and "smoke size" in section(out)


def test_the_committed_report_regenerates_from_the_committed_results(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "docs" / "REPORT.md"
    out.parent.mkdir()
    out.write_text((root / "docs" / "REPORT.md").read_text())
    monkeypatch.chdir(root)  # the report names its results folder as given: `results`
    assert main(["report", "--results", "results", "--out", str(out)]) == 0
    assert out.read_text() == (root / "docs" / "REPORT.md").read_text()


def test_single_core_rows_are_labelled_compared_with_their_own_reference_and_scaled(tmp_path):
    res = tmp_path / "results"
    cores = {"cores": 2, "cores_machine": 2}
    one = {"cores": 1, "cores_machine": 2}
    write(res, "ref.json", {**result("reference", 1.0), **cores})
    write(res, "ref-1core.json", {**result("reference", 0.8), **one})
    write(res, "jax.json", {**result("jax", 300.0), **cores})
    write(res, "jax-1core.json", {**result("jax", 200.0), **one})
    out = tmp_path / "REPORT.md"
    assert report(res, out) == 0
    rows = {row[0]: row for row in tables(out)["Machine A"]}
    assert rows["jax float32 on 1 of 2 cores"][2] == "250.00"  # 200 / 0.8: the one-core reference
    assert rows["jax float32"][2] == "300.00"
    assert "- multi-core scaling: jax float32 1.50x on 2 cores over 1 (300.0 vs 200.0 samples/s)" in section(out)
