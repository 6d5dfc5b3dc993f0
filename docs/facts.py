"""`python docs/facts.py`: the derived counts and measured float facts that docs/SPEC.md and
docs/REPORT.md cite, each labelled with its section. Counts are arithmetic on the default config;
float facts are measured with numpy, torch and the reference trainer. CPU only, a few seconds."""
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
spec, data, check, backends = (importlib.import_module(m) for m in ("backends.spec", "backends.data",
                                                                      "bench.check", "backends"))
build_model = importlib.import_module("reference.backend").build_model
cfg = spec.TromptConfig()
C, P, D, N, B = cfg.n_columns, cfg.n_prompts, cfg.d_model, cfg.n_cycles, spec.BATCH_SIZE
n, f32 = spec.n_params(cfg), np.float32
size = {k: math.prod(s) for k, s in spec.param_shapes(cfg).items()}
head = sum(v for k, v in size.items() if k.startswith("tdown."))
shared, cell = size["prompt"] + head, sum(v for k, v in size.items() if k.startswith("tcells.0."))
lr_wd, steps_full = spec.LR * spec.WEIGHT_DECAY, math.ceil(data.PRESETS["full"][0] / B)
mask, hd, pcd = N * (12 * P * D * D + 6 * P * C * D), 6 * D * D + 6 * D, P * C * D
ew_r5, ew_ref, r5_row = 20 * C * D * N, 8 * pcd * N, N * (12 * P * C + 12 * C * D + hd)
expand = N * (6 * pcd + 6 * P * D + hd)
rows = {"reference": mask + expand, "r2, r3": mask / B + expand,
        "r4": mask / B + N * (12 * P * C + 6 * C * D + hd), "r5": mask / B + r5_row}
adam_scale = f32(np.sqrt(1 - f32(0.999))) / f32(1 - f32(0.9)) / (np.sqrt(1e-3) / 0.1)
facts = {
    "§2 numbers per cell / head / prompt": (cell, head, size["prompt"]),
    "§2 parameters / tensors": (n, len(size)),
    "§4 F8 shared gradients: numbers / float32 bytes; all gradients MB": (shared, 4 * shared, 4 * n / 1e6),
    "§6 steps per epoch, full preset": steps_full,
    "§7 (B, P, C, D) expansion per row and cell, float32 MB": 4 * pcd / 1e6,
    "§8 mask path FLOPs per computation / per row at B = 8": (mask, mask / B),
    **{f"§8 GEMM FLOPs per row (B = 8) / GFLOP per step, {k}": (v, v * B / 1e9) for k, v in rows.items()},
    "§8 r5 GEMM FLOPs per row without the mask path (large B)": r5_row,
    "§8 element-wise FLOPs (estimate): reference per row / r5 per row / per step": (ew_ref, ew_r5, ew_r5 * B),
    "§8 FLOPs per step, GEMM + element-wise: r5 / reference": ((rows["r5"] + ew_r5) * B,
                                                               (rows["reference"] + ew_ref) * B),
    "§8 AdamW bytes per step (24 B/parameter) / MB per row / MB at 40 B": (24 * n, 3 * n / 1e6, 40 * n / 1e6),
    "§8 batch bytes; r5's H (N, B, C, D) float32 MB": (B * C * 4, 4 * N * B * C * D / 1e6),
    "§8 reference expansion MB per row and pass / GB per row (10 passes) / GB per step": (
        4 * pcd * N / 1e6, 40 * pcd * N / 1e9, 40 * pcd * N * B / 1e9),
    "§9.1 lr*wd; 1 - largest float32 below 1": (lr_wd, 2.0 ** -24),
    "§9.1 float32(1 - lr*wd) == 1.0": bool(f32(1 - lr_wd) == 1.0),
    "§9.1 float64 shrink over 5 full epochs": 1 - (1 - lr_wd) ** (5 * steps_full),
    "§9.5 1 - float32(0.999); relative error": (f"{1 - f32(0.999):.6g}", abs((1 - f32(0.999)) / 1e-3 - 1)),
    "§9.5 step-1 AdamW factor sqrt(1-b2)/(1-b1) from float32 scalars: rel. error": abs(adam_scale - 1),
    "§9.6 nan_to_num(inf) in float32; sqrt(float32 max)": (f"{np.nan_to_num(f32(np.inf)):.8g}",
                                                         float(np.sqrt(np.finfo(f32).max))),
}
for dt in (torch.float32, torch.float64):  # §9.6 LayerNorm of a row holding 1e37; §9.1 zero-gradient AdamW
    row = torch.cat([torch.tensor([1e37], dtype=dt), torch.ones(D - 1, dtype=dt)])
    facts[f"§9.6 {dt} LayerNorm of a row holding 1e37: NaN"] = bool(torch.layer_norm(row, (D,)).isnan().any())
    shrink, start = [], torch.linspace(0.5, 2.0, 64, dtype=dt)
    for kind in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        p = torch.nn.Parameter(start.clone())
        opt = torch.optim.AdamW([p], lr=spec.LR, weight_decay=spec.WEIGHT_DECAY, **kind)
        for _ in range(100):
            p.grad = torch.zeros_like(p)
            opt.step()
        shrink.append(float((1 - p.detach() / start).abs().max()))
    facts[f"§9.1 {dt} AdamW, zero gradient, 100 steps: shrink (for-loop / foreach / fused)"] = shrink

raw, params = data.make_synthetic(1024, 1)[0], spec.init_params(cfg)  # the first 1,024 training rows
facts["§5 missing cells in the first 1,024 training rows"] = float(np.isnan(raw).mean())
x = np.nan_to_num(raw[:64])
h = np.maximum(x[:, :, None] * params["tcells.0.feature_emb_weight"] + params["tcells.0.feature_emb_bias"], 0)
msq = (h.astype(np.float64) ** 2).mean(-1)
facts["§9.2 model H (64 rows, cell 0): max |x| / max mean^2/mean(h^2)"] = (
    float(np.abs(x).max()), float((h.mean(-1) ** 2 / np.where(msq > 0, msq, 1)).max()))
wide = np.random.default_rng(0).normal(1e5, 1e3, size=(1000, D))
for label, arr in (("offset 1e5, spread 1e3", wide), ("model H", h)):  # float32 variances vs float64
    truth, a = arr.astype(np.float64).var(-1), arr.astype(f32)
    one, two, keep = (a * a).mean(-1) - a.mean(-1) ** 2, a.var(-1), truth > spec.LN_EPS  # var: two-pass
    facts[f"§9.2 {label}: variance rel. error, one-pass / two-pass"] = [
        float((abs(v - truth)[keep] / truth[keep]).max()) for v in (one, two)]
model, dev = build_model(params, cfg, "float32"), 0.0
with torch.no_grad():
    for c in model.tcells:  # §9.3: the importance masks at the initial parameters
        q = c.dense_imp(torch.cat([c.ln_prompt(c.emb_prompt), model.prompt], -1)) + c.emb_prompt
        dev = max(dev, float((torch.softmax(q @ c.ln_col(c.emb_column).T, -1).sum(-1) - 1).abs().max()))
facts["§9.3 float32 max |sum_c M[p,c] - 1|, full size"] = dev
problem = check.make_problem(steps=8)  # §9.4: bench check's config, 8 AdamW steps of the reference
for dtype in ("float32", "float64"):
    start = {k: v.astype(dtype) for k, v in problem.params.items()}
    trainer = backends.load("reference", dtype=dtype).trainer(start, problem.cfg, problem.x, problem.y)
    trainer.run(problem.batches)
    facts[f"§9.4 {dtype} reference, 8 steps: largest move of a dead parameter"] = max(
        float(np.abs(trainer.params()[k] - start[k]).max()) for k in spec.dead_params(problem.cfg))

for label, value in facts.items():
    print(f"{label}: " + " / ".join(
        str(v) if isinstance(v, (str, bool)) else f"{int(v):,}" if float(v).is_integer() and 0 < v < 1e12
        else f"{v:.3g}" for v in (value if isinstance(value, (list, tuple)) else [value])))
