"""The torch backend on torch_xla's device, on the CPU PJRT client. torch_xla pins torch 2.9.0, so
this runs in its own environment: `make xla-test` (part of .ci/run); `make test` leaves it out."""

import os

import numpy as np
import torch_xla  # noqa: F401  (this folder needs it: a missing torch_xla is an error, not a skip)

import backends
from bench import check
from tests.backends.problems import CFG, DEAD, problem, rel_err

os.environ.setdefault("PJRT_DEVICE", "CPU")


def test_forward_and_gradients_match_the_reference():
    reference = backends.load("reference", dtype="float64")
    params, x, y = problem(rows=5)
    ours = backends.load("torch", device="xla")
    assert rel_err(ours.forward(params, x, CFG), reference.forward(params, x, CFG)) < 1e-4
    _, grads = ours.loss_and_grad(params, x, y, CFG)
    _, ref_grads = reference.loss_and_grad(params, x, y, CFG)
    for name in ref_grads.keys() - DEAD:
        assert rel_err(grads[name], ref_grads[name]) < 1e-4, name
    trainer = ours.trainer(params, CFG, x, y)
    trainer.run([np.arange(0, 2), np.arange(2, 4), np.arange(4, 5)])
    assert np.isfinite(trainer.losses()).all() and len(trainer.losses()) == 3


def test_the_xla_trainer_passes_the_check():
    result = check.check_trainer("torch", device="xla", dtype="float32")
    assert result["verdict"] == "pass", check.format_report(result)
