"""Published peak rates of the devices `bench roofline` prices the torch ladder on, each with its
source, and the overheads it assumes. Figures a vendor page gives are marked with the page; the
others are labelled assumptions. Change a figure here and rerun `python -m bench roofline`.
"""

from __future__ import annotations

import dataclasses

LAUNCH_SOURCE = ("assumption: 5 us of host time per eager kernel launch (blog measurements put it "
                 "at 4-6 us, e.g. 'pegainfer (3): From Launch Overhead to CUDA Graph', susun-blog.com)")
GRAPH_US = 1.0
GRAPH_SOURCE = f"assumption (no source): {GRAPH_US:g} us per kernel replayed from a CUDA graph"


@dataclasses.dataclass(frozen=True)
class Device:
    """Published peaks of one device (TFLOP/s, GB/s) with where each comes from."""

    key: str
    name: str
    fp32_tflops: float  # float32 matmuls, exact (CUDA cores; TPU: six bf16 passes, an assumption)
    tensor_tflops: float  # float32 matmuls on tensor units, not exact (TF32; TPU: one bf16 pass)
    half_tflops: float  # 16-bit matmuls (AMP)
    vector_tflops: float | None  # element-wise float32; None: not published, counted as memory-bound
    gb_per_s: float
    launch_us: float  # per kernel in eager mode; 0: one compiled program per step (not modelled)
    sources: tuple[str, ...]
    count: int = 1  # devices used together
    link_gb_per_s: float | None = None  # between them

    def matmul_rate(self, half: bool, precision: str) -> float:
        return 1e12 * (self.half_tflops if half else self.fp32_tflops if precision == "exact"
                       else self.tensor_tflops)


T4_SOURCES = ("NVIDIA T4 Tensor Core GPU datasheet: FP32 8.1 TFLOPS, mixed-precision FP16 65 TFLOPS, "
              "320 GB/s GDDR6, no TF32 or bf16 (the datasheet itself not retrieved here; confirmed on "
              "sysrqmts.com 'NVIDIA Tesla T4 Graphics Card': FP32 8.141, FP16 65.13 TFLOPS, 320.0 GB/s, "
              "PCIe 3.0 x16)", LAUNCH_SOURCE)
DEVICES = (
    Device("t4", "NVIDIA T4", 8.1, 8.1, 65.0, 8.1, 320.0, 5.0, T4_SOURCES),
    Device("t4x2", "2 x NVIDIA T4 (PCIe 3.0)", 8.1, 8.1, 65.0, 8.1, 320.0, 5.0, T4_SOURCES + (
        "PCIe 3.0 x16: 15.75 GB/s per direction in theory ('PCI Express bus', hpc-notes.pages.dev, from "
        "the PCI-SIG rates); assumption: 12 GB/s effective for the all-reduce between the two cards",),
        count=2, link_gb_per_s=12.0),
    Device("a100", "NVIDIA A100 SXM4 80GB", 19.5, 156.0, 312.0, 19.5, 2039.0, 5.0, (
        "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), as "
        "tabulated on glennklockwood.com/garden/processors/A100: FP32 19.5, TF32 156, BF16 312 TFLOPS "
        "dense, 2,039 GB/s HBM2e (80 GB SXM4)", LAUNCH_SOURCE)),
    Device("h100", "NVIDIA H100 SXM5 80GB", 66.9, 494.7, 989.4, 66.9, 3350.0, 5.0, (
        "NVIDIA H100 figures from the Hopper whitepaper as tabulated on glennklockwood.com/garden/"
        "processors/h100: FP32 66.9, TF32 494.7 dense, BF16 989.4 dense TFLOPS, 3.35 TB/s HBM3 (the "
        "datasheet rounds FP32 to 67 and quotes TF32/BF16 with sparsity, twice these)", LAUNCH_SOURCE)),
    Device("tpu_v5e", "Google TPU v5e (1 chip)", 197.0 / 6, 197.0, 197.0, None, 819.0, 0.0, (
        "Google Cloud documentation 'TPU v5e' (cloud.google.com/tpu/docs/v5e): 197 TFLOPs bf16 per chip, "
        "16 GB HBM2 at 819 GBps",
        "assumption: float32 matmuls at precision HIGHEST cost six bf16 passes (197/6 TFLOPS); JAX names "
        "this algorithm BF16_BF16_F32_X6 (jax.lax.DotAlgorithmPreset; JAX docs 'Matmul precision': TPUs "
        "compute float32 products with one or several bf16 passes); that HIGHEST means six is unverified",
        "the vector unit's float32 rate is not published: element-wise work is counted as memory-bound",
        "torch reaches a TPU through torch_xla, which compiles every step: all rungs are estimated fused, "
        "with no launch overhead (not modelled)")),
)
