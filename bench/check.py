"""Equivalence check: one backend against the float64 reference, through the numpy API only.

Compared on a fixed batch of synthetic rows (raw, unscaled features, as the model sees them):
the forward pass, the loss, every live gradient, and the parameter updates of a few AdamW steps.
Deviations are relative to the largest magnitude of the reference quantity, so one number per
row reads the same for every tensor. The 7 dead parameters (trompt_spec.md F7) have a true
gradient of exactly zero and are reported apart: their float values are rounding noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import backends
from backends import data, spec
from backends.spec import TromptConfig

# A small config with odd, distinct sizes, so a swapped axis cannot pass by accident.
CHECK_CONFIG = TromptConfig(n_columns=37, n_prompts=11, d_model=16, n_cycles=3)
CHECK_BATCH = 5
ADAM_STEPS = 3
# Tolerance on deviation / max|reference|, per dtype of the backend under test.
TOLERANCE = {"float64": 1e-9, "float32": 2e-3}


@dataclass
class Row:
    quantity: str
    max_abs_dev: float
    rel_dev: float


def _rel(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    dev = float(np.max(np.abs(np.asarray(a, np.float64) - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return dev, dev / scale if scale > 0 else dev


def check_backend(name: str, device: str = "cpu", dtype: str = "float32",
                  cfg: TromptConfig = CHECK_CONFIG, batch: int = CHECK_BATCH, seed: int = 0) -> dict:
    """Run the comparison; returns {'verdict', 'max_rel_dev', 'tolerance', 'rows'}."""
    backend = backends.load(name, device=device, dtype=dtype)
    oracle = backends.load("reference", device="cpu", dtype="float64")
    x_raw, y_raw, _, _ = data.make_synthetic(batch * (ADAM_STEPS + 1), 1, n_columns=cfg.n_columns, seed=seed)
    x = np.nan_to_num(x_raw).astype(np.float32)  # the input every backend receives in float32
    y = ((y_raw - y_raw.mean()) / y_raw.std(ddof=1)).astype(np.float32)
    params = spec.init_params(cfg, seed, "float32")
    x0, y0 = x[:batch], y[:batch]

    rows: list[Row] = []
    dead = set(spec.dead_params(cfg))

    pred_ref = oracle.forward(params, x0, cfg)
    rows.append(Row("forward", *_rel(backend.forward(params, x0, cfg), pred_ref)))

    loss_ref, grads_ref = oracle.loss_and_grad(params, x0, y0, cfg)
    loss, grads = backend.loss_and_grad(params, x0, y0, cfg)
    rows.append(Row("loss", *_rel(np.array(loss), np.array(loss_ref))))
    for k in spec.param_names(cfg):
        if k not in dead:
            rows.append(Row(f"grad {k}", *_rel(grads[k], grads_ref[k])))
    dead_max = max(float(np.max(np.abs(grads[k]))) for k in dead)

    batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(ADAM_STEPS)]
    new_ref, losses_ref = oracle.train_steps(params, batches, cfg)
    new, losses = backend.train_steps(params, batches, cfg)
    rows.append(Row(f"{ADAM_STEPS} AdamW losses", *_rel(np.array(losses), np.array(losses_ref))))
    for k in spec.param_names(cfg):
        if k not in dead:  # compare the updates, not the parameters: updates are ~lr, params ~1
            base = params[k].astype(np.float64)
            rows.append(Row(f"update {k}", *_rel(new[k] - base, new_ref[k] - base)))

    worst = max(r.rel_dev for r in rows)
    tol = TOLERANCE[dtype]
    return {
        "backend": name, "device": device, "dtype": dtype, "config": cfg.to_dict(), "batch": batch,
        "verdict": "pass" if worst <= tol else "FAIL",
        "max_rel_dev": worst, "tolerance": tol, "dead_param_grad_max": dead_max,
        "rows": [r.__dict__ for r in rows],
    }


def format_report(result: dict, full: bool = False) -> str:
    rows = result["rows"]
    if not full:  # collapse per-tensor rows into the worst gradient and the worst update
        keep = [r for r in rows if not r["quantity"].startswith(("grad ", "update "))]
        for prefix in ("grad ", "update "):
            group = [r for r in rows if r["quantity"].startswith(prefix)]
            worst = max(group, key=lambda r: r["rel_dev"])
            keep.append({**worst, "quantity": f"worst {prefix.strip()} ({worst['quantity'][len(prefix):]}, "
                                              f"of {len(group)})"})
        rows = keep
    width = max(len(r["quantity"]) for r in rows)
    out = [f"{result['backend']} ({result['device']}, {result['dtype']}) vs reference float64, "
           f"config {result['config']}, batch {result['batch']}",
           f"{'quantity':<{width}}  {'max |dev|':>10}  {'rel dev':>10}"]
    out += [f"{r['quantity']:<{width}}  {r['max_abs_dev']:10.2e}  {r['rel_dev']:10.2e}" for r in rows]
    out.append(f"dead parameters (zero true gradient): max |grad| {result['dead_param_grad_max']:.1e}")
    out.append(f"verdict: {result['verdict']} (worst rel dev {result['max_rel_dev']:.2e}, "
               f"tolerance {result['tolerance']:.0e})")
    return "\n".join(out)
