"""Floors: the best this machine could do for this algorithm, measured in the same run as the
timings they bound (`bench time` records them in every result, `bench all` measures the machine
once for all its processes: `python -m bench.floors OUT.json`; the torch ladder prints them).

    compute floor   matmul-class FLOPs per sample (torch's FlopCounterMode on the rung's own
                    model) at the best measured float32 GEMM rate; element-wise work is
                    ignored, so the true bound is lower. On the CPU the rate is measured with
                    both GEMM libraries torch ships: MKL (torch.mm, torch.bmm) and oneDNN (its
                    mkldnn linear op). MKL chooses its code path by CPU vendor as well as by
                    instruction set; on an AMD CPU with AVX-512 it ran at about half oneDNN's
                    rate (docs/REPORT.md), so oneDNN, which chooses by instruction set alone,
                    shows better what the machine can do.
    memory floor    AdamW's unavoidable traffic (read + write params, m, v: 24 bytes per
                    parameter per step, docs/SPEC.md) at the measured copy bandwidth
"""

from __future__ import annotations

import time

import numpy as np

import backends
from backends import data as data_mod
from backends import spec


def machine_peaks(device: str, cfg: spec.TromptConfig, square: int = 2048) -> dict:
    """Best-of-5 float32 GEMM rate (square², and the model's own B·N × P×C×D products) and copy
    bandwidth (read + write), with this process's threads."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def best_seconds(fn: object, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    big = torch.randn(square, square, device=device)
    b, p, c, d = spec.BATCH_SIZE * cfg.n_cycles, cfg.n_prompts, cfg.n_columns, cfg.d_model
    mask, emb = torch.randn(b, p, c, device=device), torch.randn(b, c, d, device=device)
    src = torch.randn(16 * 2**20, device=device)  # 64 MB, far beyond the caches
    dst = torch.empty_like(src)
    peaks = {
        "gemm_square": square, "gemm_gflops_square": 2 * square**3 / best_seconds(lambda: big @ big) / 1e9,
        "gemm_model_shape": [b, p, c, d],
        "gemm_gflops_model": 2 * b * p * c * d / best_seconds(lambda: torch.bmm(mask, emb)) / 1e9,
        "copy_gb_per_s": 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src)) / 1e9,
    }
    if device == "cpu" and torch.backends.mkldnn.is_available():
        def onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # x @ wᵀ
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

        emb_t = emb.transpose(1, 2).contiguous()  # (b, d, c): each product is mask[i] @ emb_t[i]ᵀ
        peaks["gemm_gflops_square_onednn"] = 2 * square**3 / best_seconds(lambda: onednn(big, big)) / 1e9
        peaks["gemm_gflops_model_onednn"] = 2 * b * p * c * d / best_seconds(
            lambda: [onednn(mask[i], emb_t[i]) for i in range(b)]) / 1e9
    return peaks


def best_gemm_gflops(peaks: dict) -> float:
    """The best float32 GEMM rate measured, whichever library and shape gave it."""
    return max(v for k, v in peaks.items() if k.startswith("gemm_gflops"))


def torch_equivalent(backend: str, options: dict) -> tuple[str, dict]:
    """The torch trainer that runs the same algorithm, whose products FlopCounterMode can count:
    the reference itself, torch's own variant, and r5 for the other frameworks (they implement r5;
    JAX's r3 is torch's r3) and for kernels torch cannot see into (they compute r5's algebra)."""
    if backend == "reference":
        return backend, options
    variant = options.get("variant")
    counted = {**options, "variant": variant if variant in ("r2", "r3", "r4") else "r5"}
    return "torch", counted if backend == "torch" else {"variant": counted["variant"]}


def gemm_flops_per_sample(backend: str, options: dict, device: str, cfg: spec.TromptConfig,
                          dataset: data_mod.Dataset) -> float:
    """Matmul-class FLOPs of one training step per sample, counted on an eager trainer of the
    backend with the rung's variant (AMP, compile and the optimizer flavour change no product).
    The reference is counted at batch 1: it repeats everything per sample anyway."""
    from torch.utils.flop_counter import FlopCounterMode

    backend, options = torch_equivalent(backend, options)
    rows = np.arange(1 if backend == "reference" else spec.BATCH_SIZE)
    eager = {k: options[k] for k in ("variant", "threads") if k in options}
    params = spec.init_params(cfg, spec.SEED, "float32")
    trainer = backends.load(backend, device=device).trainer(params, cfg, dataset.x_train[rows],
                                                           dataset.y_train[rows], **eager)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.run([np.arange(len(rows))])
        trainer.sync()
    return counter.get_total_flops() / len(rows)


def floors(backend: str, options: dict, device: str, cfg: spec.TromptConfig, dataset: data_mod.Dataset,
           peaks: dict) -> dict:
    """Both floors in samples/s, with the numbers they come from."""
    flops = gemm_flops_per_sample(backend, options, device, cfg, dataset)  # one step: cheap
    bytes_per_sample = 24 * spec.n_params(cfg) / spec.BATCH_SIZE
    rate = best_gemm_gflops(peaks) * 1e9
    return {"gemm_flops_per_sample": flops, "compute_floor_sps": rate / flops,
            "optimizer_bytes_per_sample": bytes_per_sample,
            "memory_floor_sps": peaks["copy_gb_per_s"] * 1e9 / bytes_per_sample}


def percent_of_floors(samples_per_sec: float, bounds: dict) -> dict:
    """How close a measured speed comes to each floor, in percent."""
    return {"percent_of_compute_floor": 100 * samples_per_sec / bounds["compute_floor_sps"],
            "percent_of_memory_floor": 100 * samples_per_sec / bounds["memory_floor_sps"]}


if __name__ == "__main__":  # python -m bench.floors OUT.json [DEVICE]: the machine's peaks, once
    import sys

    from bench import output

    device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    output.write_json(sys.argv[1], {"device": device, **machine_peaks(device, spec.TromptConfig())})
