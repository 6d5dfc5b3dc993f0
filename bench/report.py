"""Regenerate the results section of docs/REPORT.md (tables and log-scale charts) from results/*.json.

    python -m bench report [--results results] [--out docs/REPORT.md]

Reads every `*.json` in --results. Timing records (what `python -m bench --json`, `bench all` and
torchrun runs write) are validated with `bench.results.read_result`; a file that is not one is
skipped with a one-line note on stderr. Torch ladder records (`ladder_torch_<device>.json`) are
listed with a link to their own table and chart. Results are grouped by the machine that made them
(`device_name`), then by setting (data, batch size, model config): a speed ratio is only meaningful
between results of one machine and one setting. "× reference" divides by the reference backend's
samples/s on the same machine, setting and dtype (the one from the same git commit when there are
several), so it is the speed-up measured in that run.

Only the text between the markers `<!-- results:begin -->` and `<!-- results:end -->` is rewritten
(the rest of the report belongs to other sections); the charts go to `img/` beside --out. Both are
written to a temporary file first and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from bench import ladder as bench_ladder
from bench import output, roofline, sweep_view
from bench.results import (
    SPREAD_HEADER,
    equivalence_text,
    floor_text,
    is_peer,
    label,
    number,
    read_result,
    scaling_lines,
    setting_key,
    speed_text,
    spread_text,
)

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
DEFAULT_TITLE = "# trompt-bench: report"
OVERVIEW = ""  # the chart key of all machines side by side (a device name is never empty)
PEER_NOTE = ("A row marked \"(peer, not our model)\" times another project's Trompt (`python -m bench "
             "peer`; docs/SPEC.md §12 says how its model differs from ours): it computes another "
             "function, so it has no × reference and no equivalence verdict.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="directory holding the result JSON files")
    p.add_argument("--out", default="docs/REPORT.md", help="markdown file whose results section is rewritten")
    p.add_argument("--include-smoke", action="store_true",
                   help="also list smoke ladders (a tiny model: they check plumbing, they measure nothing)")


def run(args: argparse.Namespace) -> int:
    results_dir, out = Path(args.results), Path(args.out)
    timings, ladders, notes = load_results(results_dir)
    if not args.include_smoke:
        notes += [f"note: skipped {results_dir / ladder['_file']}: a smoke ladder (--include-smoke lists it)"
                  for ladder in ladders if ladder.get("smoke")]
        ladders = [ladder for ladder in ladders if not ladder.get("smoke")]
    sweeps = load_sweeps(results_dir)
    for note in notes:
        print(note, file=sys.stderr)
    if not timings and not ladders and not sweeps:
        raise ValueError(f"no readable result files in {results_dir}/ (run python -m bench ... --json first)")
    groups = group_results(timings)
    img_dir = out.parent / "img"
    charts = write_charts(groups, img_dir)
    for sweep in sweeps:  # its chart, drawn again beside the report's own (keyed by its file name)
        charts[sweep["_file"]] = img_dir / f"{Path(sweep['_file']).stem}.png"
        sweep_view.write_chart(sweep, charts[sweep["_file"]])
    links = {k: Path(os.path.relpath(v, out.parent)).as_posix() for k, v in charts.items()}
    section = render_section(groups, ladders, links, results_dir, n_skipped=len(notes), sweeps=sweeps)
    replace_section(out, section)
    print(f"wrote the results section of {out} ({len(timings)} results on {len(groups)} machine(s), "
          f"{len(ladders)} ladder(s)) and {len(charts)} chart(s) in {img_dir}/")
    return 0


# ---------------------------------------------------------------------------------------------
# Reading


def load_results(results_dir: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(timing records, ladder records, one note per skipped file), in file-name order.

    Every record gets `_file`, the file's name, so the tables can say where each row comes from.
    """
    if not results_dir.is_dir():
        raise ValueError(f"results directory {results_dir} does not exist")
    timings, ladders, notes = [], [], []
    for path in sorted(results_dir.glob("*.json")):
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            notes.append(f"note: skipped {path}: not readable JSON ({type(e).__name__})")
            continue
        if isinstance(raw, dict) and raw.get("kind") == roofline.KIND:  # roofline_lines shows it
            continue
        if isinstance(raw, dict) and "ladder" in raw and isinstance(raw.get("rows"), list):
            ladders.append({**raw, "_file": path.name})
            continue
        if is_sweep(raw):  # load_sweeps reads it
            continue
        try:
            record = read_result(path)
        except ValueError as e:
            notes.append(f"note: skipped {path}: {str(e).splitlines()[0]}")
            continue
        timings.append(record)
    return timings, ladders, notes


def is_sweep(raw: object) -> bool:
    return isinstance(raw, dict) and raw.get("kind") == "sweep" and isinstance(raw.get("points"), list)


def load_sweeps(results_dir: Path) -> list[dict]:
    """The records of `bench sweep` (sweep_<device>.json) in file-name order, each with `_file`."""
    sweeps = []
    for path in sorted(results_dir.glob("sweep_*.json")):
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # load_results has said so
        if is_sweep(raw):
            sweeps.append({**raw, "_file": path.name})
    return sweeps


# ---------------------------------------------------------------------------------------------
# Grouping and ratios


def setting_text(key: tuple[str, int, str]) -> str:
    data, batch, config = key
    cfg = json.loads(config)
    shape = ", ".join(f"{k}={v}" for k, v in cfg.items())
    return f"data `{data}`, batch {batch}, config {shape}"


def row_order(r: dict) -> tuple:
    """Reference first, then the fastest first; a peer's row (not our model) after ours."""
    return (r["backend"] != "reference", is_peer(r), -r["samples_per_sec"], r["_file"])


def group_results(timings: list[dict]) -> dict[str, dict[tuple, list[dict]]]:
    """{device_name: {setting: [records]}}, machines and settings in sorted order."""
    groups: dict[str, dict[tuple, list[dict]]] = {}
    for r in timings:
        device = str(r.get("device_name") or "unknown machine")
        groups.setdefault(device, {}).setdefault(setting_key(r), []).append(r)
    return {device: {key: sorted(settings[key], key=row_order) for key in sorted(settings)}
            for device, settings in sorted(groups.items())}


def reference_for(r: dict, rows: list[dict]) -> dict | None:
    """The reference result this row is measured against: same machine and setting (the caller
    passes one group), same dtype; the same git commit (the same run) when there are several."""
    candidates = [c for c in rows if c["backend"] == "reference" and c.get("dtype") == r.get("dtype")]
    candidates = [c for c in candidates if c.get("cores") == r.get("cores")] or candidates
    same_commit = [c for c in candidates if c.get("git_commit") == r.get("git_commit")]
    chosen = same_commit or candidates
    return chosen[0] if chosen else None


def speedup_vs_reference(r: dict, rows: list[dict]) -> float | None:
    if is_peer(r):  # another model: a ratio to the reference would read as a speed-up of ours
        return None
    ref = reference_for(r, rows)
    return None if ref is None else r["samples_per_sec"] / ref["samples_per_sec"]


# ---------------------------------------------------------------------------------------------
# Markdown


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    header = ["backend, dtype (options)", "samples/s", "× reference", "step ms", "first step s", "peak MB",
              "% GEMM floor", "% memory floor", SPREAD_HEADER, "equivalence", "file"]
    body = [[cell(label(r)), speed_text(r["samples_per_sec"]), number(speedup_vs_reference(r, rows), ",.2f"),
             number(r.get("step_time_ms"), ",.2f"), number(r.get("compile_time_s"), ",.2f"),
             number(r.get("peak_memory_mb"), ",.0f"), floor_text(r, "compute"), floor_text(r, "memory"),
             spread_text(r), cell(equivalence_text(r)), f"`{cell(r['_file'])}`"]
            for r in rows]
    return output.markdown_table(header, body, "lrrrrrrrrll")


def render_section(groups: dict[str, dict[tuple, list[dict]]], ladders: list[dict], charts: dict[str, str],
                   results_dir: Path, n_skipped: int = 0, sweeps: list[dict] | None = None) -> str:
    n = sum(len(rows) for settings in groups.values() for rows in settings.values())
    lines = [
        "## Results",
        "",
        f"Generated by `python -m bench report` from {n} result file(s) in `{results_dir.as_posix()}/`"
        + (f" ({n_skipped} other file(s) skipped)" if n_skipped else "")
        + "; do not edit by hand, rerun the command. Samples/s are training samples per second "
        "(median of the repeats, after warm-up); × reference is the speed-up over the reference "
        "backend measured on the same machine, setting and dtype; first step s is the first step "
        "(tracing and compilation); equivalence is the verdict of `bench check` on the very "
        "configuration timed, against the float64 reference, with its worst norm-wise deviation "
        "(\"not exact\" where the configuration does not compute the original, e.g. AMP). Compare "
        "rows within one table only: "
        "other machines, settings or runs are different measurements. Peak MB is device memory where "
        "the framework reports it, else the whole process's peak host RSS. % GEMM floor and % memory floor: "
        "the speed as a share of the best this machine could do for the algorithm, from the float32 "
        "GEMM rate and the copy bandwidth measured in the same run (bench/floors.py).",
    ]
    if (results_dir / "README.md").exists():
        lines[-1] += f" `{results_dir.as_posix()}/README.md` says how, and under what load, each was made."
    if OVERVIEW in charts:
        lines += ["", f"![samples/s on every machine, log scale]({charts[OVERVIEW]})"]
    for device, settings in groups.items():
        lines += ["", f"### {device}"]
        for key, rows in settings.items():
            commits = sorted({str(r.get("git_commit")) for r in rows})
            lines += ["", f"{setting_text(key)}; commit {', '.join(commits)}.", "", markdown_table(rows)]
            scaling = scaling_lines(rows)
            if scaling:
                lines += ["", *(f"- {line}" for line in scaling)]
            if any(is_peer(r) for r in rows):
                lines += ["", PEER_NOTE]
        if device in charts:
            lines += ["", f"![samples/s on {device}, log scale]({charts[device]})"]
    if ladders:
        lines += ["", "### Torch speed-up ladders", ""]
        for ladder in ladders:
            stem = Path(ladder["_file"]).stem
            smoke = " (smoke size: plumbing only, not a measurement)" if ladder.get("smoke") else ""
            lines.append(f"- `{ladder['_file']}`: {ladder.get('ladder')} on {ladder.get('device_name', '?')} "
                         f"({ladder.get('device', '?')}){smoke}; table `{stem}.md`, chart `{stem}.png` "
                         f"in `{results_dir.as_posix()}/`.")
        for ladder in ladders:  # the full table of each real (not smoke) ladder, as its run wrote it
            if not ladder.get("smoke") and isinstance(ladder.get("machine_peaks"), dict):
                lines += ["", f"#### `{ladder['_file']}`", "", bench_ladder.markdown(ladder).rstrip("\n")]
    for sweep in sweeps or []:  # `bench sweep`: its table, laws and chart (charts[its file name])
        lines += ["", sweep_view.markdown(sweep, charts[sweep["_file"]], level=3).rstrip("\n")]
    lines += roofline_lines(results_dir)
    return "\n".join(lines) + "\n"


def roofline_lines(results_dir: Path) -> list[str]:
    """The exact-float32 table of `bench roofline`'s estimates, when results_dir holds them."""
    path = results_dir / "roofline_estimates.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(record, dict) or record.get("kind") != roofline.KIND:
        return []
    return ["", "### Accelerators on paper: roofline ESTIMATES, not measurements", "",
            f"Made by `{record['command']} --out {results_dir.as_posix()}` (commit {record['git_commit']}) "
            "from the kernels of one step of each rung counted on the CPU and the published peaks of "
            "each device (docs/REPORT.md, \"Accelerators on paper\"; the counts, the not-exact "
            f"tensor-unit table and every source in `{results_dir.as_posix()}/roofline_estimates.md`). "
            "Estimated training samples/s in exact float32, and what bounds each; `make device-check` "
            "on the hardware replaces them.", "", roofline.estimate_table(record, "exact")]


def replace_section(path: Path, section: str) -> None:
    """Put `section` between the markers of `path`, creating the file or the markers if absent."""
    text = path.read_text() if path.exists() else DEFAULT_TITLE + "\n"
    block = f"{BEGIN}\n{section}{END}"
    n_begin, n_end = text.count(BEGIN), text.count(END)
    if n_begin == 1 and n_end == 1 and text.index(BEGIN) < text.index(END):
        start, stop = text.index(BEGIN), text.index(END) + len(END)
        new = text[:start] + block + text[stop:]
    elif n_begin == 0 and n_end == 0:
        new = insert_after_title(text, block)
    else:
        raise ValueError(f"{path} must hold {BEGIN} once, then {END} once (found {n_begin} and {n_end})")
    output.write_text(path, new)


def insert_after_title(text: str, block: str) -> str:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "".join(lines[:i + 1]) + "\n" + block + "\n" + "".join(lines[i + 1:])
    return DEFAULT_TITLE + "\n\n" + block + "\n\n" + text


# ---------------------------------------------------------------------------------------------
# Charts


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "machine"


def chart_rows(settings: dict[tuple, list[dict]]) -> list[tuple[str, float, bool]]:
    """(bar label, samples/s, is the reference) for one machine; the setting is named when there
    are several, so two bars never share a label."""
    out = []
    for key, rows in settings.items():
        tag = f" [{key[0]}, b{key[1]}]" if len(settings) > 1 else ""
        out += [(label(r) + tag, r["samples_per_sec"], r["backend"] == "reference") for r in rows]
    return out


def draw_bars(ax: object, rows: list[tuple[str, float, bool]], title: str,
              limits: tuple[float, float] | None = None) -> None:
    names = [name for name, _, _ in rows][::-1]
    values = [value for _, value, _ in rows][::-1]
    colors = ["tab:gray" if is_ref else "tab:blue" for _, _, is_ref in rows][::-1]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), names, fontsize=7)
    ax.set_xscale("log")
    for i, value in enumerate(values):
        ax.text(value, i, " " + speed_text(value), va="center", fontsize=7)
    ax.set_xlim(*(limits or (min(values) / 2, max(values) * 8)))
    ax.set_xlabel("training samples/s (log scale; gray = reference)", fontsize=8)
    ax.set_title(title, fontsize=9)


def write_charts(groups: dict[str, dict[tuple, list[dict]]], img_dir: Path) -> dict[str, Path]:
    """One bar chart per machine, plus all machines side by side when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, Path] = {}

    def save(fig: object, path: Path) -> None:
        fig.tight_layout()
        output.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)

    for device, settings in groups.items():
        rows = chart_rows(settings)
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.4))
        draw_bars(ax, rows, device)
        charts[device] = img_dir / f"results_{slug(device)}.png"
        save(fig, charts[device])
    if len(groups) > 1:
        tallest = max(len(chart_rows(s)) for s in groups.values())
        size = (5.5 * len(groups), 0.35 * tallest + 1.6)
        fig, axes = plt.subplots(1, len(groups), figsize=size, squeeze=False)
        every = [value for s in groups.values() for _, value, _ in chart_rows(s)]
        limits = (min(every) / 2, max(every) * 8)  # one scale, so bars compare across machines
        for ax, (device, settings) in zip(axes[0], groups.items()):
            draw_bars(ax, chart_rows(settings), device, limits)
        charts[OVERVIEW] = img_dir / "results_overview.png"
        save(fig, charts[OVERVIEW])
    return charts
