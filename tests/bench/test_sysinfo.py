"""What a result records about where it came from: the commit, and whether the code differed."""

import subprocess
from pathlib import Path

from bench import sysinfo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_git_commit_is_dirty_for_code_changes_but_not_for_results(tmp_path):
    repo = tmp_path / "project"
    (repo / "bench").mkdir(parents=True)
    (repo / "results").mkdir()
    (repo / "bench" / "code.py").write_text("x = 1\n")
    (repo / "results" / "speed.json").write_text("{}\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    short = git(repo, "rev-parse", "--short", "HEAD").strip()
    where = repo / "bench"  # asked from a subfolder, as bench/sysinfo.py asks
    assert sysinfo.git_commit(where) == short
    (repo / "results" / "speed.json").write_text('{"samples_per_sec": 1}\n')  # a run publishing
    (repo / "results" / "new.json").write_text("{}\n")
    assert sysinfo.git_commit(where) == short
    (repo / "bench" / "code.py").write_text("x = 2\n")
    assert sysinfo.git_commit(where) == f"{short}-dirty"


def test_git_commit_outside_a_repository_is_none(tmp_path):
    assert sysinfo.git_commit(tmp_path) is None


def test_cpu_name_names_the_model_the_cores_and_the_widest_vector_unit():
    cores = __import__("os").cpu_count()
    epyc_avx2 = "processor : 0\nmodel name : AMD EPYC\nflags : fpu sse2 avx avx2 fma\n"
    epyc_avx512 = "model name : AMD EPYC\nflags : fpu avx2 avx512f avx512bw avx512_bf16\n"
    xeon_amx = "model name : Intel(R) Xeon(R)\nflags : avx2 avx512f amx_bf16 amx_tile\n"
    assert sysinfo.cpu_name(epyc_avx2) == f"AMD EPYC ({cores} cores, AVX2)"
    assert sysinfo.cpu_name(epyc_avx512) == f"AMD EPYC ({cores} cores, AVX-512)"
    assert sysinfo.cpu_name(xeon_amx) == f"Intel(R) Xeon(R) ({cores} cores, AVX-512 + AMX)"
    assert sysinfo.cpu_name("model name : Old CPU\nflags : fpu sse2\n") == f"Old CPU ({cores} cores)"


def test_cpuinfo_fields_and_the_isa_tag_that_names_kernel_builds(monkeypatch):
    from backends import native

    text = "processor : 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n"
    assert native.cpuinfo_field("model name", text) == "AMD EPYC"
    assert native.cpuinfo_field("flags", text) == "fpu avx2 avx512f"
    assert native.cpuinfo_field("microcode", text) is None and native.cpuinfo_field("flags", "") is None
    # The tag follows the flags: two CPUs with different instruction sets get different builds.
    tags = set()
    for flags in ("fpu avx2", "fpu avx2 avx512f"):
        monkeypatch.setattr(native, "cpuinfo_field", lambda name, cpuinfo=None, flags=flags: flags)
        tags.add(native.isa_tag())
    assert len(tags) == 2 and all(len(tag) == 8 for tag in tags)
