"""The original training protocol through any backend's trainer: 5 epochs of shuffled batches of
8 (last partial batch kept), AdamW lr 3e-4 / wd 1e-5, then after every epoch the validation MAE
(batch 1024, mean over cycles, de-standardised with the train statistics), printed with 5 decimals.

With a checkpoint directory the run saves its whole state every K steps (bench/checkpoint.py) and
`resume=True` continues from the newest checkpoint so that the loss trajectory is the one an
uninterrupted run would have produced.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import backends
from backends import data as data_mod
from backends import spec
from backends.spec import TromptConfig
from bench import checkpoint
from bench.cli import Stopped

# How many steps go to the trainer per call: large enough for backends that fuse steps (lax.scan,
# graph replay), small enough for a lively progress bar.
STEPS_PER_CALL = 64


def predict_all(trainer: backends.Trainer, x: np.ndarray,
                batch_size: int = spec.VAL_BATCH_SIZE) -> np.ndarray:
    return np.concatenate([trainer.predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def train(backend_name: str, device: str, dtype: str, dataset: data_mod.Dataset, cfg: TromptConfig,
          epochs: int = spec.EPOCHS, batch_size: int = spec.BATCH_SIZE, seed: int = spec.SEED,
          options: dict | None = None, max_steps: int | None = None, progress: bool = True,
          checkpoint_dir: str | None = None, checkpoint_every: int = 0, resume: bool = False,
          overwrite: bool = False) -> dict:
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if (checkpoint_every or resume or overwrite) and not checkpoint_dir:
        raise ValueError("--checkpoint-every, --resume and --overwrite need --checkpoint-dir")
    # One run per checkpoint directory, locked for the whole run: a directory holding checkpoints is
    # refused unless resumed (same run) or overwritten. Under torchrun rank 0 locks and writes for all.
    with (checkpoint.open_run(checkpoint_dir, resume=resume, overwrite=overwrite)
          if checkpoint_dir and _writes_checkpoints() else contextlib.nullcontext()):
        return _train(backend_name, device, dtype, dataset, cfg, epochs, batch_size, seed, options, max_steps,
                      progress, checkpoint_dir, checkpoint_every, resume)


def _writes_checkpoints() -> bool:
    """Under torchrun every rank computes the (collective) state, only rank 0 writes it."""
    return os.environ.get("RANK", "0") == "0"


def _train(backend_name: str, device: str, dtype: str, dataset: data_mod.Dataset, cfg: TromptConfig,
           epochs: int, batch_size: int, seed: int, options: dict | None, max_steps: int | None,
           progress: bool, checkpoint_dir: str | None, checkpoint_every: int, resume: bool) -> dict:
    options = dict(options or {})
    backend = backends.load(backend_name, device=device, dtype=dtype)
    trainer = backend.trainer(spec.init_params(cfg, seed, dtype), cfg, dataset.x_train, dataset.y_train,
                              **options)
    identity = {"backend": backend_name, "dtype": dtype, "config": cfg.to_dict(), "data": dataset.source,
                "seed": seed, "batch_size": batch_size, "epochs": epochs, "lr": spec.LR,
                "weight_decay": spec.WEIGHT_DECAY, "options": options, "max_steps": max_steps}

    # Where to start: the beginning, or the newest checkpoint.
    epoch0, batch0, done_losses, history = 0, 0, [], []
    if resume:
        state, done_losses, meta = checkpoint.load_latest(checkpoint_dir)
        checkpoint.check_same_run(meta, identity)
        if meta["epoch"] >= epochs:
            at = meta["epoch"]
            raise ValueError(f"the checkpoint in {checkpoint_dir} is at epoch {at} of a "
                             f"{meta.get('epochs', '?')}-epoch run; --epochs must be larger than {at} to "
                             f"continue it (got {epochs})")
        trainer.load_state(state)
        epoch0, batch0, history = meta["epoch"], meta["batch_in_epoch"], meta["history"]
        print(f"resumed from step {meta['global_step']} (epoch {epoch0 + 1}, batch {batch0})",
              file=sys.stderr)

    def all_losses() -> list[float]:
        return done_losses + trainer.losses()

    t_start = time.perf_counter()
    for epoch in range(epoch0, epochs):
        batches = data_mod.epoch_batches(len(dataset.x_train), batch_size, epoch, seed)[:max_steps]
        epoch_first_step = len(all_losses()) - (batch0 if epoch == epoch0 else 0)
        pos = batch0 if epoch == epoch0 else 0
        bar = tqdm(total=len(batches), initial=pos, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not progress, file=sys.stderr)
        while pos < len(batches):
            n = STEPS_PER_CALL
            if checkpoint_every:  # stop exactly on the checkpoint boundaries
                n = min(n, checkpoint_every - len(all_losses()) % checkpoint_every)
            chunk = batches[pos:pos + n]
            checked = len(all_losses())
            trainer.run(chunk)
            check_finite(all_losses(), checked, epoch, epoch_first_step, checkpoint_dir)
            pos += len(chunk)
            bar.update(len(chunk))
            if checkpoint_every and len(all_losses()) % checkpoint_every == 0:
                next_epoch, next_batch = (epoch, pos) if pos < len(batches) else (epoch + 1, 0)
                if next_batch == 0:
                    break  # the epoch-end checkpoint below also records this epoch's validation
                _save(checkpoint_dir, trainer, all_losses(), identity, next_epoch, next_batch, history)
        trainer.sync()
        bar.close()
        epoch_losses = all_losses()[epoch_first_step:]
        mae = data_mod.validation_mae(predict_all(trainer, dataset.x_val), dataset)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)), "val_mae": mae,
                        "elapsed_s": time.perf_counter() - t_start})
        print(f"Epoch {epoch + 1}, val MAE: {mae:.5f} (train loss {np.mean(epoch_losses):.5f})", flush=True)
        if checkpoint_dir and (checkpoint_every or epoch + 1 == epochs):
            _save(checkpoint_dir, trainer, all_losses(), identity, epoch + 1, 0, history)
    baseline = float(np.abs(dataset.y_mean - dataset.y_val).mean())
    return {**identity, "device": device, "history": history, "losses": all_losses(),
            "val_mae_of_predicting_the_train_mean": baseline, "params": trainer.params()}


def check_finite(losses: list[float], first: int, epoch: int, epoch_first_step: int,
                 checkpoint_dir: str | None) -> None:
    """Stop at the first non-finite loss among losses[first:], naming where; nothing after it is
    saved, so the newest checkpoint is the last good state."""
    bad = [i for i in range(first, len(losses)) if not np.isfinite(losses[i])]
    if bad:
        step = bad[0]
        kept = f"; the last good checkpoint is kept in {checkpoint_dir}" if checkpoint_dir else ""
        raise Stopped(f"training loss became {losses[step]} at epoch {epoch + 1}, step "
                      f"{step - epoch_first_step + 1} of the epoch (step {step + 1} of the run): "
                      f"stopped{kept}")


def _save(directory: str, trainer: backends.Trainer, losses: list[float], identity: dict, epoch: int,
          batch_in_epoch: int, history: list) -> None:
    meta = {**identity, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": len(losses),
            "history": history}
    state = trainer.state()  # collective under torchrun: every rank computes it
    if _writes_checkpoints():
        checkpoint.save(directory, state, losses, meta)
