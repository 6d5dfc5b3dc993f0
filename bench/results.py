"""Result files of `bench time`: read back with validation, grouped by setting, shown as tables.

`bench compare` and `bench report` both read results through here, so a row is labelled, keyed
and checked the same way wherever it appears.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import output

REQUIRED = ("backend", "samples_per_sec", "config", "batch_size")


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


def label(r: dict) -> str:
    """backend, dtype and the options set by hand: what distinguishes two rows of one table."""
    given = r.get("options_given", r.get("options")) or {}
    opts = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
    return f"{r['backend']} {r.get('dtype', '?')}" + (f" ({opts})" if opts else "")


def speed_text(sps: float) -> str:
    """Three significant digits below 10 samples/s (the reference runs at ~0.5), one decimal above."""
    return format(sps, ",.1f") if sps >= 10 else format(sps, ".3g")


def number(value: object, fmt: str) -> str:
    return format(value, fmt) if is_number(value) else "-"


def equivalence_text(r: dict) -> str:
    eq = r.get("equivalence")
    if not isinstance(eq, dict) or "verdict" not in eq:
        return "not checked"
    return f"{eq['verdict']} ({number(eq.get('worst'), '.1e')})"


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
    return refs[0] if refs else min(records, key=lambda r: r["samples_per_sec"])


def comparison_table(records: list[dict], baseline: dict) -> str:
    """One row per result, fastest first, with its speed as a multiple of `baseline`'s."""
    rows = []
    for r in sorted(records, key=lambda r: -r["samples_per_sec"]):
        rows.append([label(r), r.get("device", "?"), speed_text(r["samples_per_sec"]),
                     f"{r['samples_per_sec'] / baseline['samples_per_sec']:,.2f}",
                     number(r.get("step_time_ms"), ",.2f"), number(r.get("compile_time_s"), ",.2f"),
                     number(r.get("peak_memory_mb"), ",.0f"), floor_text(r, "compute"),
                     floor_text(r, "memory"), equivalence_text(r), f"`{r['_file']}`"])
    header = ["backend, dtype (options)", "device", "samples/s", f"× {label(baseline)}", "step ms",
              "first step s", "peak MB", "% GEMM floor", "% memory floor", "equivalence", "file"]
    devices = "; ".join(sorted({str(r.get("device_name", "?")) for r in records}))
    return output.markdown_table(header, rows, "llrrrrrrrll") + f"\n\nDevice: {devices}"
