"""`bench peer`: time pytorch-frame's Trompt, the one a user would install today, with our protocol.

    python -m bench peer --data synthetic:small --seconds 60 --json runs/peer.json
    python -m bench peer --count-params       # both models' parameter counts; nothing is timed

The peer (backends/peers) is timed by the loop that times our backends (bench.timing), on the
same data, batch size and batch order, with the same loss and AdamW settings, and its result has
the fields of a `bench time` result plus `peer` (the library and its version) and `n_params`
(both models' parameter counts). It is another model (docs/SPEC.md §12), so it is never checked
against the reference: its `equivalence` says what differs, and the tables label its row
"(peer, not our model)" without a speed ratio. `bench all` adds this row when pytorch-frame is
installed (the `peer` extra).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from backends import peers, spec
from bench import cli, commands
from bench.results import speed_text

DEFAULT_SECONDS = 60.0  # a step of batch 8 takes seconds: the peer, like our reference, builds (B, P, C, D)


def add_arguments(p: argparse.ArgumentParser) -> None:
    cli.add_run_args(p)  # --opt and --parallel too, which the peer refuses: it has no options
    commands.add_timing_args(p, seconds=DEFAULT_SECONDS, warmup=1, first_step="nothing compiles")
    p.add_argument("--count-params", action="store_true",
                   help="print both models' parameter counts, by module, and stop")


def total(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(int(np.prod(shape)) for shape in shapes.values())


def count_by_module(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Parameters per top-level module ("tcells", "trompt_convs", ...), in the model's order."""
    counts: dict[str, int] = {}
    for name, shape in shapes.items():
        top = name.split(".")[0]
        counts[top] = counts.get(top, 0) + int(np.prod(shape))
    return counts


def parameter_lines(cfg: spec.TromptConfig, peer: peers.PytorchFramePeer) -> list[str]:
    """Both models' parameter counts at `cfg`, each split by top-level module."""
    from backends.peers.pytorch_frame import parameter_shapes

    lines = [f"parameters at C={cfg.n_columns}, P={cfg.n_prompts}, D={cfg.d_model}, N={cfg.n_cycles}:"]
    for name, shapes in (("ours, the modified Trompt (backends/spec.py)", spec.param_shapes(cfg)),
                         (f"{peer.title} (torch_frame.nn.models.Trompt)", parameter_shapes(cfg))):
        parts = ", ".join(f"{module} {n:,}" for module, n in count_by_module(shapes).items())
        lines.append(f"  {name}: {total(shapes):,} in {len(shapes)} tensors ({parts})")
    return lines


def run(args: argparse.Namespace) -> int:
    from backends.peers.pytorch_frame import parameter_shapes
    from bench.timing import time_training

    commands.refuse_existing(args.json, args.force)
    peer = peers.load(seed=args.seed)
    peer.parse_options(cli.parse_options(args.opt, args.parallel))  # none exist: any is refused
    if args.count_params:
        cfg = spec.TromptConfig(n_columns=args.n_columns or spec.TromptConfig().n_columns,
                                n_prompts=args.n_prompts, d_model=args.d_model, n_cycles=args.n_cycles)
        print("\n".join(parameter_lines(cfg, peer)))
        return 0
    dataset, cfg = commands.load_data(args)
    progress = not args.quiet
    result = time_training(peer.name, peer.device, peer.dtype, dataset, cfg, args.batch_size, args.warmup,
                           args.repeats, args.steps, args.seconds, args.seed, progress=progress, backend=peer)
    result.update({
        "options_given": {},
        "peer": peer.title,
        "equivalence": peer.differences,
        "n_params": {"peer": total(parameter_shapes(cfg)), "ours": spec.n_params(cfg)},
    })
    low, high = result["samples_per_sec_min_max"]
    print(f"{peer.title} (peer, not our model) {result['device']} {result['dtype']}: "
          f"{speed_text(result['samples_per_sec'])} samples/s (median of {result['repeats']} repeats of "
          f"{result['steps_per_repeat']} steps, {speed_text(low)}-{speed_text(high)}), "
          f"{result['step_time_ms']:,.0f} ms/step "
          f"(batch {result['batch_size']}), first step {result['compile_time_s']:.2f} s, setup "
          f"{result['setup_time_s']:.2f} s; parameters {result['n_params']['peer']:,} (ours "
          f"{result['n_params']['ours']:,})")
    if progress:
        print(f"note: {peer.differences}", file=sys.stderr)
    if args.json:
        commands.write_result(args.json, result, args.force)
    return 0
