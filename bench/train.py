"""The original training protocol through any backend's trainer: 5 epochs of shuffled batches of
8 (last partial batch kept), AdamW lr 3e-4 / wd 1e-5, then after every epoch the validation MAE
(batch 1024, mean over cycles, de-standardised with the train statistics), printed with 5 decimals.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from tqdm import tqdm

import backends
from backends import data as data_mod
from backends import spec
from backends.spec import TromptConfig

# How many steps go to the trainer per call: large enough for backends that fuse steps (lax.scan,
# graph replay), small enough for a lively progress bar.
STEPS_PER_CALL = 64


def predict_all(trainer: backends.Trainer, x: np.ndarray,
                batch_size: int = spec.VAL_BATCH_SIZE) -> np.ndarray:
    return np.concatenate([trainer.predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def train(backend_name: str, device: str, dtype: str, dataset: data_mod.Dataset, cfg: TromptConfig,
          epochs: int = spec.EPOCHS, batch_size: int = spec.BATCH_SIZE, seed: int = spec.SEED,
          options: dict | None = None, max_steps: int | None = None, progress: bool = True) -> dict:
    backend = backends.load(backend_name, device=device, dtype=dtype)
    params = spec.init_params(cfg, seed, dtype)
    trainer = backend.trainer(params, cfg, dataset.x_train, dataset.y_train, **(options or {}))
    history = []
    t_start = time.perf_counter()
    for epoch in range(epochs):
        batches = data_mod.epoch_batches(len(dataset.x_train), batch_size, epoch, seed)
        if max_steps is not None:
            batches = batches[:max_steps]
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not progress, file=sys.stderr, leave=False)
        for i in range(0, len(batches), STEPS_PER_CALL):
            chunk = batches[i:i + STEPS_PER_CALL]
            trainer.run(chunk)
            bar.update(len(chunk))
        trainer.sync()
        bar.close()
        losses = trainer.losses()[-len(batches):]
        mae = data_mod.validation_mae(predict_all(trainer, dataset.x_val), dataset)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_mae": mae,
                        "elapsed_s": time.perf_counter() - t_start})
        print(f"Epoch {epoch + 1}, val MAE: {mae:.5f} (train loss {np.mean(losses):.5f})", flush=True)
    baseline = float(np.abs(dataset.y_mean - dataset.y_val).mean())
    return {"backend": backend_name, "device": device, "dtype": dtype, "data": dataset.source,
            "config": cfg.to_dict(), "batch_size": batch_size, "epochs": epochs, "history": history,
            "val_mae_of_predicting_the_train_mean": baseline, "params": trainer.params()}
