"""Result files: written atomically, read back with validation, compared as a markdown table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write then rename, so a reader never sees half a file (also after a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"result file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"result file {path} is not valid JSON ({e.__class__.__name__})") from None
    for key in ("backend", "samples_per_sec", "config", "batch_size"):
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"result file {path} lacks the field {key!r}; is it a bench result?")
    return obj


def comparable_key(result: dict) -> tuple:
    return (json.dumps(result["config"], sort_keys=True), result["batch_size"], result.get("data"))


def markdown_table(results: list[dict], baseline: dict | None = None) -> str:
    """One row per result; speed-ups against `baseline` (default: the first) and the previous row."""
    if not results:
        return "(no results)"
    base = baseline or results[0]
    lines = [
        "| backend | device | dtype | options | samples/s | × " + base["backend"] + " | × previous "
        "| step ms | compile s | peak MB | equivalence |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    prev = None
    for r in results:
        sps = r["samples_per_sec"]
        vs_base = sps / base["samples_per_sec"] if base["samples_per_sec"] else float("nan")
        vs_prev = sps / prev["samples_per_sec"] if prev and prev["samples_per_sec"] else float("nan")
        opts = ",".join(f"{k}={v}" for k, v in (r.get("options") or {}).items()) or "-"
        eq = r.get("equivalence") or {}
        eq_text = (f"{eq.get('verdict')} ({eq.get('max_rel_dev', float('nan')):.1e})"
                   if eq else "not checked")
        lines.append(
            f"| {r['backend']} | {r.get('device', '?')} | {r.get('dtype', '?')} | {opts} | {sps:,.1f} | "
            f"{vs_base:,.1f} | {'' if prev is None else f'{vs_prev:,.2f}'} | "
            f"{r.get('step_time_ms', 0):,.2f} | "
            f"{r.get('compile_time_s', 0):.2f} | {_fmt(r.get('peak_memory_mb'))} | {eq_text} |")
        prev = r
    devices = sorted({r.get("device_name", "?") for r in results})
    lines.append("")
    lines.append("Device: " + "; ".join(devices))
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
