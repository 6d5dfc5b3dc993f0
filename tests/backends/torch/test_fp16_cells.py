"""parallel=cells with a GradScaler: the ranks agree on skipping a step.

Each rank's GradScaler sees only its own gradients, and under cells a rank's own cells'
gradients are not summed across ranks: an inf in one rank's cell would make that rank skip the
step while the other applies it, and the replicated prompt and head would drift apart. Two gloo
ranks on the CPU (torch.amp.GradScaler("cpu") follows the same found-inf and scale rule as on
CUDA, where amp=fp16 is otherwise restricted) inject an inf into rank 1's cell gradient once:
both must skip that step, keep equal scales, and keep identical replicated parameters. The same
run without the agreement shows the drift, so the test would fail without it.

Run by pytest; torchrun runs this file as the two ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
LAUNCH_TIMEOUT_S = 240
# Below GradScaler's default 2**16, whose first steps overflow fp16 by themselves (the scaler's
# usual start-up back-off), which would hide whether a rank skipped for its peer's inf.
INIT_SCALE = 2.0**10


@pytest.mark.slow
@pytest.mark.xdist_group("torch_parallel")
def test_ranks_skip_the_same_steps_and_keep_equal_scales(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "fp16_cells.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[:3000]
    result = json.loads(out.read_text())

    agreed = result["agreed"]
    backed_off = INIT_SCALE / 2
    assert agreed["skipped"] == [True, True]  # neither rank's parameters moved
    assert agreed["scales_after_inf"] == [backed_off, backed_off]  # both backed off once
    assert agreed["replicas_equal_after_inf"]
    assert agreed["stepped_after"] == [True, True]  # the next, clean step is taken by both
    assert agreed["scales_after"] == [backed_off, backed_off] and agreed["replicas_equal_after"]
    assert agreed["steps"] == [1, 1]  # AdamW counted only the clean step

    alone = result["without_agreement"]  # what the agreement prevents
    assert alone["skipped"] == [False, True] and not alone["replicas_equal_after_inf"]
    assert alone["scales_after_inf"] == [INIT_SCALE, backed_off]


# ---------------------------------------------------------------------------------------------
# One rank (under torchrun)


def scenario(make_trainer, agree: bool) -> dict:
    import torch

    from backends.torch.parallel import selfcheck_problem
    from backends.torch.train import SHARED_PARAMS_PREFIX

    cfg, params, x, y, batches = selfcheck_problem(3)
    trainer = make_trainer(params, cfg, x, y)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    if not agree:
        trainer.unreduced = []
    group = trainer.group

    def local() -> dict[str, np.ndarray]:
        return {k: t.detach().numpy().copy() for k, t in trainer.p.items()}

    def replicas_equal() -> bool:
        first, second = group.gather({k: v for k, v in local().items() if k.startswith(SHARED_PARAMS_PREFIX)})
        return all(np.array_equal(first[k], second[k]) for k in first)

    def unchanged(before: dict[str, np.ndarray]) -> bool:
        return all(np.array_equal(before[k], v) for k, v in local().items())

    before = local()
    hook = None
    if group.rank == 1:  # an inf in one of this rank's own cells' gradients
        hook = trainer.p["feature_emb_weight"].register_hook(
            lambda g: g.index_fill(0, torch.tensor([0]), float("inf")))
    trainer.step(batches[1])
    if hook is not None:
        hook.remove()
    out = {"skipped": unchanged(before), "scales_after_inf": trainer.scaler.get_scale(),
           "replicas_equal_after_inf": replicas_equal()}
    before = local()
    trainer.step(batches[2])
    out.update(stepped_after=not unchanged(before), scales_after=trainer.scaler.get_scale(),
               replicas_equal_after=replicas_equal(), steps=int(trainer.state()["step"]))
    return {k: group.gather(v) if not k.startswith("replicas") else v for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import backends
    from backends.torch.parallel import leave_group
    from backends.torch.train import TorchBackend

    # amp=fp16 is refused off CUDA; here the CPU GradScaler stands in for the CUDA one.
    TorchBackend._check_options = lambda self, opts: None
    backend = backends.load("torch", device="cpu", dtype="float32")

    def make_trainer(params, cfg, x, y):
        return backend.trainer(params, cfg, x, y, parallel="cells", amp="fp16", timeout_s=60.0)

    result = {"agreed": scenario(make_trainer, agree=True),
              "without_agreement": scenario(make_trainer, agree=False)}
    if int(os.environ["RANK"]) == 0:
        Path(args.out).write_text(json.dumps(result))
    leave_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
