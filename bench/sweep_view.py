"""What a sweep (bench/sweep.py) measured, as scaling laws, a markdown table and a log-log chart.

The law of a backend on an axis is a least-squares line through the points that ran ("ok"):
log(step time) = a + k·log(size), so step time ~ size^k; R² says how well a straight line fits
on log-log axes. On the batch axis samples/s = B / step time ~ B^(1-k), and the batch from which
no larger batch is more than 10% faster (in samples/s) is where samples/s stops growing.
`bench sweep` writes these next to its JSON; `bench report` puts them into docs/REPORT.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import output
from bench.results import number, speed_text

GROWTH = 1.10  # a larger batch must be more than 10% faster in samples/s to count as growth
CLEAN_FIT = 0.9  # below this R², the points do not lie on one power law
AXIS_X = {"batch": "batch_size", "columns": "n_columns"}
AXIS_SYMBOL = {"batch": "B", "columns": "C"}
AXIS_NOUN = {"batch": "batch size", "columns": "columns"}


def fit_power_law(xs: list[float], ys: list[float]) -> dict:
    """Least squares of log(y) = intercept + exponent·log(x); exponent and R² are None with fewer
    than two distinct x."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return {"exponent": None, "intercept": None, "r_squared": None, "n_points": n}
    log_x, log_y = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    exponent, intercept = np.polyfit(log_x, log_y, 1)
    residual = float(np.sum((log_y - (intercept + exponent * log_x)) ** 2))
    spread = float(np.sum((log_y - log_y.mean()) ** 2))
    r_squared = 1.0 if spread == 0 else 1 - residual / spread  # all y equal: the flat line fits
    return {"exponent": float(exponent), "intercept": float(intercept), "r_squared": r_squared, "n_points": n}


def saturation_batch(batches: list[int], samples_per_sec: list[float]) -> int | None:
    """The smallest batch that no larger one beats by more than GROWTH in samples/s; None when
    only the largest batch qualifies (samples/s still grows there) or there is one point."""
    for i, batch in enumerate(batches[:-1]):
        if all(later <= GROWTH * samples_per_sec[i] for later in samples_per_sec[i + 1:]):
            return batch
    return None


def shape_word(k: float) -> str:
    if abs(k) < 0.15:
        return "flat"
    if k < 0:
        return "falling"
    for limit, word in ((0.85, "sub-linear"), (1.15, "linear"), (1.85, "super-linear"), (2.15, "quadratic")):
        if k < limit:
            return word
    return "steeper than quadratic"


def law_text(axis: str, fit: dict, largest: int | None = None) -> str:
    """The law in words, e.g. "step time ~ C^0.98 (R² 1.00, 5 points): linear in columns"."""
    if fit["exponent"] is None:
        return f"too few points ({fit['n_points']}) for a law"
    k, x = fit["exponent"], AXIS_SYMBOL[axis]
    text = (f"step time ~ {x}^{k:.2f} (R² {fit['r_squared']:.2f}, {fit['n_points']} points): "
            f"{shape_word(k)} in {AXIS_NOUN[axis]}")
    if axis == "batch":
        text += f"; samples/s ~ B^{1 - k:.2f}"
        saturation = fit.get("saturation_batch")
        text += (f", stops growing at batch {saturation} (no larger batch is over {GROWTH - 1:.0%} faster)"
                 if saturation else f", still growing at batch {largest}")
    if fit["r_squared"] < CLEAN_FIT:
        text += "; the points do not follow one power law"
    return text


def fits(points: list[dict]) -> dict[str, dict[str, dict]]:
    """{backend: {axis: fit of step time against the axis's size over its ok points}}."""
    out: dict[str, dict[str, dict]] = {}
    for name in dict.fromkeys(p["backend"] for p in points):
        for axis, key in AXIS_X.items():
            mine = [p for p in points if p["backend"] == name and p["axis"] == axis]
            if not mine:
                continue
            ok = sorted((p for p in mine if p["status"] == "ok"), key=lambda p: p[key])
            fit = {"x": key, **fit_power_law([p[key] for p in ok], [p["step_time_ms"] for p in ok])}
            if axis == "batch":
                fit["saturation_batch"] = saturation_batch([p[key] for p in ok],
                                                           [p["samples_per_sec"] for p in ok])
            fit["law"] = law_text(axis, fit, ok[-1][key] if ok else None)
            out.setdefault(name, {})[axis] = fit
    return out


# ---------------------------------------------------------------------------------------------


def title(record: dict) -> str:
    return f"How cost grows with the work: {record['device_name']}, {record['device']}"


def markdown(record: dict, chart_link: str, level: int = 1) -> str:
    """The sweep as markdown: what was run, the table, the laws, the chart; `level` is the
    heading's level (1 in the sweep's own file, 3 inside docs/REPORT.md)."""
    header = ["backend", "axis", "batch", "columns", "samples/s", "step ms", "peak MB", "status"]
    rows = [[p["backend"], p["axis"], f"{p['batch_size']}" + ("" if p["original_batch"] else " †"),
             p["n_columns"], speed_text(p["samples_per_sec"]) if p["status"] == "ok" else "-",
             number(p["step_time_ms"], ",.2f"), number(p["peak_memory_mb"], ",.0f"),
             p["status"].replace("|", "\\|")]
            for p in sorted(record["points"], key=lambda p: (p["axis"] != "batch", p["axis"]))]
    kinds: dict[str, list[str]] = {}
    for p in record["points"]:
        if p["peak_memory_kind"] and p["backend"] not in kinds.setdefault(p["peak_memory_kind"], []):
            kinds[p["peak_memory_kind"]].append(p["backend"])
    axes, config = record["axes"], ", ".join(f"{k}={v}" for k, v in record["config"].items())
    load = record["load_average_1min"]
    lines = [
        f"{'#' * level} {title(record)}",
        "",
        f"Made by `{record['command']}` at commit {record['git_commit']} ({record['started_at']}; load "
        f"average {load['before']:.1f} before, {load['after']:.1f} after), {record['dtype']}, data "
        f"`{record['data']}`, {config}. Every point is one `bench time` "
        f"in a fresh process with a budget of {record['seconds']:g} s (the reference: one warm-up step and "
        f"one step per repeat). Batch axis: C = {axes['batch']['n_columns']}; column axis: batch "
        f"{axes['columns']['batch_size']}; the point on both is timed once. † A batch other than 8 is not "
        "the original computation (the protocol trains at batch 8): those points measure how the cost "
        "scales. Peak MB: " + "; ".join(f"{kind} ({', '.join(names)})" for kind, names in kinds.items())
        + f". Memory limit {record['max_memory_gb']:g} GB: a point whose process passes it is stopped, and "
        "the reference is skipped where its estimate would.",
        "",
        output.markdown_table(header, rows, "llrrrrrl"),
        "",
        "Scaling laws (least squares of log step time on log size, over the points that ran):",
        "",
    ]
    for name, by_axis in record["fits"].items():
        lines += [f"- {name}, {axis}: {fit['law']}" for axis, fit in by_axis.items()]
    lines += ["", f"![step time and samples/s against batch and columns, log-log]({chart_link})"]
    return "\n".join(lines) + "\n"


def write_chart(record: dict, path: Path) -> None:
    """Log-log panels: samples/s and peak memory against batch, step time and peak memory against
    columns; one line per backend; an x on the bottom edge marks a point without a result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(p["backend"] for p in record["points"]))
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    panels = [("batch", "samples_per_sec", "training samples/s"),
              ("columns", "step_time_ms", "step time (ms)"),
              ("batch", "peak_memory_mb", "peak memory (MB)"),
              ("columns", "peak_memory_mb", "peak memory (MB)")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), layout="constrained")
    for ax, (axis, key, ylabel) in zip(axes.flat, panels):
        x_key = AXIS_X[axis]
        ax.set_xscale("log")
        ax.set_yscale("log")
        lost: dict[str, list[int]] = {}
        for name in names:
            mine = sorted((p for p in record["points"] if p["backend"] == name and p["axis"] == axis),
                          key=lambda p: p[x_key])
            ok = [p for p in mine if p["status"] == "ok" and p[key]]
            ax.plot([p[x_key] for p in ok], [p[key] for p in ok], "o-", color=colors[name], label=name)
            lost[name] = [p[x_key] for p in mine if p["status"] != "ok"]
        bottom, top = ax.get_ylim()
        for name, xs in ((n, xs) for n, xs in lost.items() if xs):  # an empty unclipped line sits at 0, 0
            ax.plot(xs, [bottom] * len(xs), "x", color=colors[name], markersize=9, mew=2, clip_on=False)
        ax.set_ylim(bottom, top)
        values = sorted({p[x_key] for p in record["points"] if p["axis"] == axis})
        ax.set_xticks(values, [str(v) for v in values], fontsize=7)
        ax.minorticks_off()
        held = ("C = {n_columns}" if axis == "batch" else "batch {batch_size}").format(**record["axes"][axis])
        ax.set_xlabel(f"{AXIS_NOUN[axis]} ({held})", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="x", color="gray", linestyle="", mew=2))
    labels.append("x on the bottom edge: no result (out of memory, refused, skipped or failed)")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle(f"{title(record)}, log-log; a batch other than 8 is not the original computation",
                 fontsize=9)
    output.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
