"""Equivalence check: the configured trainer against the float64 reference trainer.

The trainer under test is built exactly as `bench time` builds it (same backend, device, dtype
and options: compiled, AMP, CUDA graphs, a parallel mode over the launched ranks, a variant). From
the spec's initial parameters, on fixed rows of synthetic data, it and the float64 reference
each produce:

    predictions        the forward pass at the initial parameters, on every row
    gradients          every live parameter's gradient on the first batch (where the trainer
                       exposes gradients)
    losses             the training loss of each of STEPS optimizer steps (the last batch short)
    updates            p_K - p_0 for every live parameter (the parameters move by ~lr per step
                       while they are ~1: comparing parameters would hide the optimizer)
    predictions after  the forward pass after the K steps

Each is compared norm-wise: ||ours - reference|| / ||reference||, per tensor. The dead parameters
(a true gradient of exactly zero, docs/SPEC.md) are reported apart: their float values are noise.

Tolerances. float64 backends must agree to 1e-9 on every quantity. The float32 tolerances come
from the original program itself: the reference run in float32 against itself in float64 on the
same cases (`python -m bench calibrate`), times CALIBRATION_FACTOR. They are constants, never
recomputed at check time, so a defect in a framework cannot loosen its own tolerance.

A configuration that does not compute the original (an AMP option, a batch size other than 8)
gets "not exact: <what differs>, deviation X", never "pass".
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

import backends
from backends import data, spec
from backends.spec import TromptConfig

# A small config with odd, distinct sizes, so a swapped axis cannot pass by accident.
CHECK_CONFIG = TromptConfig(n_columns=37, n_prompts=11, d_model=16, n_cycles=3)
BATCH, SHORT_BATCH = 5, 3
STEPS = 3
QUANTITIES = ("predictions", "gradients", "losses", "updates", "predictions after")

# `python -m bench calibrate` (AMD EPYC, 2 cores): the reference in float32 vs float64, the worst
# norm-wise deviation over CALIBRATION_SEEDS, per quantity, times this factor, rounded up. Ten leaves room for
# a correct backend that reassociates sums differently from the original (its rounding is of the
# same size, not the same bits) while staying far below what a real defect does (see the tests).
CALIBRATION_FACTOR = 10.0
CALIBRATION_SEEDS = range(8)
TOLERANCE = {
    "float64": dict.fromkeys(QUANTITIES, 1e-9),
    "float32": {"predictions": 4e-6, "gradients": 3e-5, "losses": 3e-6, "updates": 8e-3,
                "predictions after": 2e-5},
}


def at_least_three(text: str) -> int:
    value = int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be >= 3 (the check needs a short batch after two full "
                                         f"ones), got {text}")
    return value


@dataclasses.dataclass
class Problem:
    cfg: TromptConfig
    params: dict[str, np.ndarray]  # float32 initial parameters, as every backend starts
    x: np.ndarray  # raw features (NaN cleaned), float32
    y: np.ndarray  # standardised target
    batches: list[np.ndarray]  # row indices; the last batch is short

    @property
    def first_batch(self) -> np.ndarray:
        return self.batches[0]


def make_problem(steps: int = STEPS, seed: int = 0, cfg: TromptConfig = CHECK_CONFIG) -> Problem:
    sizes = [BATCH] * (steps - 1) + [SHORT_BATCH]
    x_raw, y_raw, _, _ = data.make_synthetic(sum(sizes), 1, n_columns=cfg.n_columns, seed=seed)
    x = np.nan_to_num(x_raw).astype(np.float32)
    y = ((y_raw - y_raw.mean()) / y_raw.std(ddof=1)).astype(np.float32)
    ends = np.cumsum(sizes)
    batches = [np.arange(end - size, end) for end, size in zip(ends, sizes)]
    return Problem(cfg, spec.init_params(cfg, seed, "float32"), x, y, batches)


def run_trainer(backend: backends.Backend, problem: Problem, options: dict) -> dict:
    """Everything the check compares, from one trainer built with `options`."""
    trainer = backend.trainer(problem.params, problem.cfg, problem.x, problem.y, **options)
    out = {"predictions": trainer.predict(problem.x)}
    grads = trainer.gradients(problem.first_batch)
    out["gradients"] = None if grads is None else grads[1]
    trainer.run(problem.batches)
    trainer.sync()
    out["losses"] = np.asarray(trainer.losses(), np.float64)
    state = trainer.state()
    out["updates"] = {k: state[f"param/{k}"].astype(np.float64) - problem.params[k].astype(np.float64)
                      for k in spec.param_names(problem.cfg)}
    out["predictions after"] = trainer.predict(problem.x)
    return out


def norm_dev(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref|| in float64 (the plain norm of ours where ref is zero)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shape {ours.shape} where the reference has {ref.shape}")
    scale = float(np.linalg.norm(ref))
    dev = float(np.linalg.norm(ours - ref))
    return dev / scale if scale > 0 else dev


def deviations(ours: dict, ref: dict, cfg: TromptConfig) -> dict[str, dict[str, float] | None]:
    """{quantity: {tensor name or "all": norm-wise deviation}}; None where not exposed."""
    live = [k for k in spec.param_names(cfg) if k not in set(spec.dead_params(cfg))]
    out: dict[str, dict[str, float] | None] = {}
    for q in QUANTITIES:
        if ours[q] is None:
            out[q] = None
        elif isinstance(ref[q], dict):
            out[q] = {k: norm_dev(ours[q][k], ref[q][k]) for k in live}
        else:
            out[q] = {"all": norm_dev(ours[q], ref[q])}
    return out


def check_trainer(name: str, device: str = "cpu", dtype: str = "float32", options: dict | None = None,
                  steps: int = STEPS, seed: int = 0, batch_size: int = spec.BATCH_SIZE,
                  backend: backends.Backend | None = None) -> dict:
    """Check backend `name` built with `options` (or a given `backend` object, as tests do to
    inject defects); returns the verdict record."""
    backend = backend or backends.load(name, device=device, dtype=dtype)
    options = backend.parse_options(options)
    problem = make_problem(steps, seed)
    oracle = run_trainer(backends.load("reference", device="cpu", dtype="float64"), problem, {})
    ours = run_trainer(backend, problem, options)
    devs = deviations(ours, oracle, problem.cfg)
    tolerances = TOLERANCE[backend.dtype]
    worst = {q: max(d.values()) for q, d in devs.items() if d is not None}
    failed = [q for q, w in worst.items() if not w <= tolerances[q]]  # NaN fails
    differs = backend.inexact_options(options)
    if batch_size != spec.BATCH_SIZE:
        differs.append(f"batch size {batch_size} (the original uses {spec.BATCH_SIZE})")
    overall = max(worst.values())
    if differs:
        verdict = f"not exact: {', '.join(differs)}, deviation {overall:.1e}"
    else:
        verdict = "FAIL" if failed else "pass"
    dead = spec.dead_params(problem.cfg)
    dead_grad = (None if ours["gradients"] is None
                 else max(float(np.max(np.abs(ours["gradients"][k]))) for k in dead))
    return {
        "backend": backend.name, "device": backend.device, "dtype": backend.dtype, "options": options,
        "config": problem.cfg.to_dict(), "batches": [len(b) for b in problem.batches], "seed": seed,
        "verdict": verdict, "failed": failed, "worst": overall, "worst_by_quantity": worst,
        "tolerances": tolerances, "deviations": devs, "dead_param_grad_max": dead_grad,
        "gradients_exposed": ours["gradients"] is not None,
    }


def format_report(result: dict, full: bool = False) -> str:
    lines = [f"{result['backend']} ({result['device']}, {result['dtype']}, options "
             f"{result['options']}) vs reference float64; config {result['config']}, "
             f"batches {result['batches']}",
             f"{'quantity':<44}  {'norm-wise dev':>13}  {'tolerance':>9}"]
    for q in QUANTITIES:
        devs = result["deviations"][q]
        if devs is None:
            lines.append(f"{q:<44}  {'not exposed':>13}")
            continue
        rows = devs.items() if full else [max(devs.items(), key=lambda kv: kv[1])]
        for name, value in rows:
            text = q if name == "all" else f"{q} {name}" if full else f"{q} (worst: {name})"
            mark = "" if value <= result["tolerances"][q] else "  <-- over"
            lines.append(f"{text[:44]:<44}  {value:13.2e}  {result['tolerances'][q]:9.0e}{mark}")
    if result["dead_param_grad_max"] is not None:
        lines.append(f"dead parameters (zero true gradient): max |grad| {result['dead_param_grad_max']:.1e}")
    lines.append(f"verdict: {result['verdict']} (worst norm-wise deviation {result['worst']:.2e})")
    return "\n".join(lines)


def calibrate(seeds: range = CALIBRATION_SEEDS, steps: int = STEPS) -> dict[str, float]:
    """The worst deviation of the reference in float32 from itself in float64, per quantity."""
    oracle = backends.load("reference", device="cpu", dtype="float64")
    single = backends.load("reference", device="cpu", dtype="float32")
    worst = dict.fromkeys(QUANTITIES, 0.0)
    for seed in seeds:
        problem = make_problem(steps, seed)
        devs = deviations(run_trainer(single, problem, {}), run_trainer(oracle, problem, {}), problem.cfg)
        for q, d in devs.items():
            worst[q] = max(worst[q], max(d.values()))
    return worst


def add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=len(CALIBRATION_SEEDS), help="problems measured")


def round_up(value: float) -> float:
    """To one significant digit, upwards: 7.31e-3 -> 8e-3."""
    exponent = np.floor(np.log10(value))
    return float(np.ceil(value / 10**exponent) * 10**exponent)


def cmd_calibrate(args: argparse.Namespace) -> int:
    worst = calibrate(range(args.seeds))
    print(f"reference float32 vs float64, worst over {args.seeds} seeds; x{CALIBRATION_FACTOR:g}, "
          "rounded up; the tolerance in use:")
    for q, w in worst.items():
        print(f"  {q:<18} {w:9.2e}  ->  {round_up(w * CALIBRATION_FACTOR):.0e}  "
              f"(in use: {TOLERANCE['float32'][q]:.0e})")
    return 0


COMMANDS = {"calibrate": (add_calibrate, cmd_calibrate)}  # for bench/cli.py
