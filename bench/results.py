"""Result files of `bench time`: read back with validation, grouped by setting, shown as tables.

`bench compare` and `bench report` both read results through here, so a row is labelled, keyed
and checked the same way wherever it appears. A peer's result (`bench peer`: another project's
Trompt, a different model) is labelled as such, is never the baseline and gets no speed ratio.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from bench import output

REQUIRED = ("backend", "samples_per_sec", "config", "batch_size")
SPREAD_HEADER = "spread: processes / repeats"


def is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def read_result(path: str | Path) -> dict:
    """One timing record; ValueError naming the file and the problem otherwise."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"result file {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"result file {path} is not readable JSON ({e.__class__.__name__})") from None
    for key in REQUIRED:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"result file {path} lacks the field {key!r}; is it a `bench time` result?")
    sps, batch = obj["samples_per_sec"], obj["batch_size"]
    if not is_number(sps) or sps <= 0:
        raise ValueError(f"result file {path} has samples_per_sec {sps!r}, not a positive number")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"result file {path} has batch_size {batch!r}, not a positive integer")
    if not isinstance(obj["config"], dict):
        raise ValueError(f"result file {path} has a config that is not an object")
    return {**obj, "_file": path.name}


def read_timing_results(paths: list[str | Path]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(timing records, [(path, why skipped)]): files that are not timing results are skipped."""
    records, skipped = [], []
    for path in paths:
        if not Path(path).exists():
            raise ValueError(f"result file {path} does not exist")
        try:
            records.append(read_result(path))
        except ValueError as e:
            skipped.append((str(path), str(e).splitlines()[0]))
    return records, skipped


def setting_key(r: dict) -> tuple[str, int, str]:
    """What must be equal for two speeds to be compared: data, batch size and model config."""
    return (str(r.get("data")), r["batch_size"], json.dumps(r["config"], sort_keys=True))


def is_peer(r: dict) -> bool:
    """Whether `r` times a peer (backends/peers): not our model, so no ratio to ours means a speed-up."""
    return bool(r.get("peer"))


def label(r: dict) -> str:
    """backend, dtype and the options set by hand: what distinguishes two rows of one table."""
    if is_peer(r):
        return f"{r['peer']} (peer, not our model)" + cores_text(r)
    given = r.get("options_given", r.get("options")) or {}
    opts = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
    return f"{r['backend']} {r.get('dtype', '?')}" + (f" ({opts})" if opts else "") + cores_text(r)


def cores_text(r: dict) -> str:
    """" on 1 of 2 cores" for a run pinned to fewer cores than the machine has, else nothing."""
    cores, machine = r.get("cores"), r.get("cores_machine")
    if is_number(cores) and is_number(machine) and cores < machine:
        return f" on {cores} of {machine} cores"
    return ""


def speed_text(sps: float) -> str:
    """Three significant digits below 10 samples/s (the reference runs at ~0.5), one decimal above."""
    return format(sps, ",.1f") if sps >= 10 else format(sps, ".3g")


def number(value: object, fmt: str) -> str:
    return format(value, fmt) if is_number(value) else "-"


def equivalence_text(r: dict) -> str:
    eq = r.get("equivalence")
    if isinstance(eq, str):  # a peer's: what differs, never a verdict
        return eq
    if not isinstance(eq, dict) or "verdict" not in eq:
        return "not checked"
    return f"{eq['verdict']} ({number(eq.get('worst'), '.1e')})"


def spread_text(r: dict) -> str:
    """max/min of the speeds of the fresh processes, then of the repeats inside them ("1.02 / 1.01");
    "-" for a part not measured (one process)."""
    processes = r.get("processes")
    between = processes.get("spread") if isinstance(processes, dict) else None
    return f"{number(between, '.2f')} / {number(r.get('repeat_spread'), '.2f')}"


def combine_processes(records: list[dict]) -> dict:
    """One result from the same configuration timed in several fresh processes.

    A process can settle in a slower mode and stay there (thread placement, memory layout, a
    JIT's choices), which the repeats inside one process cannot show; so the speed is the median
    of the processes' medians and the spread between processes is kept beside the spread between
    repeats. The first record is the one that ran the check; its other fields are kept."""
    first = records[0]
    speeds = [r["samples_per_sec"] for r in records]
    every_repeat = [s for r in records for s in r.get("samples_per_sec_all", [r["samples_per_sec"]])]
    combined = {k: v for k, v in first.items() if k != "_file"}
    combined.update({
        "samples_per_sec": statistics.median(speeds),
        "samples_per_sec_min_max": [min(every_repeat), max(every_repeat)],
        "repeat_spread": max(r.get("repeat_spread", 1.0) for r in records),
        "processes": {"count": len(records), "samples_per_sec": speeds,
                      "spread": max(speeds) / min(speeds) if len(records) > 1 else None,
                      "compile_time_s": [r.get("compile_time_s") for r in records],
                      "files": [r.get("_file") for r in records]},
    })
    if is_number(first.get("step_time_ms")):
        combined["step_time_ms"] = statistics.median(r["step_time_ms"] for r in records)
    if all(is_number(r.get("peak_memory_mb")) for r in records):
        combined["peak_memory_mb"] = max(r["peak_memory_mb"] for r in records)
    floors = first.get("floors")
    if isinstance(floors, dict) and is_number(floors.get("compute_floor_sps")):
        sps = combined["samples_per_sec"]
        combined["floors"] = {**floors, "percent_of_compute_floor": 100 * sps / floors["compute_floor_sps"],
                              "percent_of_memory_floor": 100 * sps / floors["memory_floor_sps"]}
    return combined


def floor_text(r: dict, which: str) -> str:
    """The result's percentage of its compute or memory floor, or "-" where none was measured."""
    floors = r.get("floors")
    return number(floors.get(f"percent_of_{which}_floor"), ".1f") if isinstance(floors, dict) else "-"


def pick_baseline(records: list[dict], wanted: str | None = None) -> dict:
    """The record named by backend or file name; by default the reference, else the slowest."""
    if wanted:
        chosen = [r for r in records if wanted in (r["backend"], r["_file"], label(r))]
        if not chosen:
            raise ValueError(f"--baseline {wanted!r} names none of the results")
        return chosen[0]
    refs = [r for r in records if r["backend"] == "reference"]
    ours = [r for r in records if not is_peer(r)] or records
    return refs[0] if refs else min(ours, key=lambda r: r["samples_per_sec"])


def comparison_table(records: list[dict], baseline: dict) -> str:
    """One row per result, fastest first, with its speed as a multiple of `baseline`'s."""
    rows = []
    for r in sorted(records, key=lambda r: -r["samples_per_sec"]):
        rows.append([label(r), r.get("device", "?"), speed_text(r["samples_per_sec"]),
                     "-" if is_peer(r) else f"{r['samples_per_sec'] / baseline['samples_per_sec']:,.2f}",
                     number(r.get("step_time_ms"), ",.2f"), number(r.get("compile_time_s"), ",.2f"),
                     number(r.get("peak_memory_mb"), ",.0f"), floor_text(r, "compute"),
                     floor_text(r, "memory"), spread_text(r), equivalence_text(r), f"`{r['_file']}`"])
    header = ["backend, dtype (options)", "device", "samples/s", f"× {label(baseline)}", "step ms",
              "first step s", "peak MB", "% GEMM floor", "% memory floor", SPREAD_HEADER, "equivalence",
              "file"]
    devices = "; ".join(sorted({str(r.get("device_name", "?")) for r in records}))
    return output.markdown_table(header, rows, "llrrrrrrrrll") + f"\n\nDevice: {devices}"


def scaling_lines(done: list[dict]) -> list[str]:
    """What the other cores add: each configuration's speed on all cores over its speed on one."""
    def key(r: dict) -> tuple:
        return r["backend"], r.get("device"), json.dumps(r.get("options_given") or {}, sort_keys=True)

    single = {key(r): r for r in done if r.get("cores") == 1 and (r.get("cores_machine") or 1) > 1}
    lines = []
    for r in done:
        one = single.get(key(r))
        if one is not None and r is not one and (r.get("cores") or 0) > 1:
            fast, slow = r["samples_per_sec"], one["samples_per_sec"]
            lines.append(f"multi-core scaling: {label(r)} {fast / slow:.2f}x on {r['cores']} cores "
                         f"over 1 ({speed_text(fast)} vs {speed_text(slow)} samples/s)")
    return lines
