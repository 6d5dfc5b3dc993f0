"""The peer (backends/peers, `bench peer`): pytorch-frame's Trompt, timed beside ours, never checked.

The tests of the model itself need pytorch-frame (the `peer` extra); those of how results show
the peer's row use hand-written result files and run without it.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from backends import peers, spec
from bench import results, run_all
from bench.cli import build_parser, main
from bench.report import BEGIN, END, PEER_NOTE

SMALL = spec.TromptConfig(n_columns=37, n_prompts=12, d_model=16, n_cycles=3)
PEER_TITLE = "pytorch-frame Trompt 0.3.0"


def needs_pytorch_frame() -> None:
    pytest.importorskip("torch_frame", reason=peers.NOT_INSTALLED)


def hand_count(cfg: spec.TromptConfig) -> int:
    """pytorch-frame's Trompt, counted from the layers its source declares (torch_frame 0.3.0:
    nn/models/trompt.py, nn/conv/trompt_conv.py, nn/decoder/trompt_decoder.py and LinearEncoder
    in nn/encoder/stype_encoder.py), for out_channels 1."""
    C, P, D, N = cfg.n_columns, cfg.n_prompts, cfg.d_model, cfg.n_cycles
    x_prompt = P * D
    encoder = C * D + C * D + 2 * D  # LinearEncoder weight and bias (C, D); its LayerNorm(D)
    conv = (C * D + P * D  # embedding_column, embedding_prompt
            + 2 * D * D + D  # lin: Linear(2D, D)
            + P  # weight: the expansion, one number per prompt
            + 2 * P  # GroupNorm(2 groups, P channels): weight and bias
            + 2 * D + 2 * D)  # the column and prompt LayerNorms
    decoder = (D + 1) + (D * D + D) + 2 * D + (D + 1)  # lin_attn, Linear(D, D), LayerNorm, Linear(D, 1)
    return x_prompt + N * (encoder + conv) + decoder


@pytest.mark.parametrize("cfg", [SMALL, spec.TromptConfig()], ids=["small", "original"])
def test_the_peer_s_parameter_count_is_the_hand_count(cfg):
    needs_pytorch_frame()
    from backends.peers.pytorch_frame import parameter_shapes

    shapes = parameter_shapes(cfg)
    assert sum(int(np.prod(s)) for s in shapes.values()) == hand_count(cfg)
    # What the two models differ by, in numbers: P more per layer (a GroupNorm's weight and bias
    # against our expansion's bias).
    assert hand_count(cfg) - spec.n_params(cfg) == cfg.n_cycles * cfg.n_prompts


# What a peer deliberately lacks of our Trainer: state, checkpoints and predictions on canonical
# parameters (bench check and bench train), which another model cannot offer.
NOT_FOR_A_PEER = {"state", "load_state", "params", "predict", "predict_chunk", "step"}


def test_the_peer_trainer_offers_the_rest_of_our_trainer_s_interface():
    needs_pytorch_frame()
    from backends.base import Trainer
    from backends.peers.pytorch_frame import PytorchFrameTrainer

    public = {name for name in dir(Trainer) if not name.startswith("_")}
    assert public - NOT_FOR_A_PEER <= set(dir(PytorchFrameTrainer)), public - set(dir(PytorchFrameTrainer))


def test_the_peer_trains_its_loss_on_fixed_rows_falls():
    needs_pytorch_frame()
    from backends.data import epoch_batches, load_dataset

    data = load_dataset("synthetic:tiny", n_columns=SMALL.n_columns)
    trainer = peers.load().trainer(None, SMALL, data.x_train, data.y_train)
    fixed = np.arange(64)
    before = trainer.gradients(fixed)[0]
    trainer.run(epoch_batches(len(data.x_train), spec.BATCH_SIZE, epoch=0)[:30])
    after = trainer.gradients(fixed)[0]
    assert len(trainer.losses()) == 30 and np.all(np.isfinite(trainer.losses()))
    assert after < 0.95 * before, (before, after)


def test_column_statistics_are_torch_frame_s_own():
    needs_pytorch_frame()
    import pandas as pd
    from torch_frame import stype
    from torch_frame.data.stats import StatType, compute_col_stats

    from backends.peers.pytorch_frame import column_stats

    rng = np.random.default_rng(3)
    x = (rng.lognormal(size=(301, 4)) * [1, 10, 1000, 0.01]).astype(np.float32)
    x[5, 1], x[7, 2], x[:, 3] = np.nan, np.inf, np.nan  # torch_frame skips non-finite values
    ours = column_stats(x, ["a", "b", "c", "d"])
    for c, name in enumerate("abcd"):
        theirs = compute_col_stats(pd.Series(x[:, c]), stype.numerical)
        for stat in (StatType.MEAN, StatType.STD):
            np.testing.assert_equal(ours[name][stat], theirs[stat])


def test_bench_peer_writes_a_timing_record_that_never_says_pass(tmp_path, capsys):
    needs_pytorch_frame()
    path = tmp_path / "peer.json"
    code = main(["peer", "--data", "synthetic:tiny", "--n-columns", "37", "--n-prompts", "12", "--d-model", "16",
                 "--n-cycles", "3", "--steps", "2", "--repeats", "2", "--quiet", "--json", str(path)])
    assert code == 0
    record = json.loads(path.read_text())
    assert record["peer"] == PEER_TITLE and record["backend"] == "pytorch-frame"
    assert record["equivalence"].startswith("not the same model: ")
    assert "pass" not in json.dumps(record["equivalence"]).lower()
    assert record["n_params"] == {"peer": hand_count(SMALL), "ours": spec.n_params(SMALL)}
    assert record["steps_per_repeat"] == 2 and record["samples_per_repeat"] == [16, 16]
    assert results.read_result(path)["samples_per_sec"] == record["samples_per_sec"]
    assert "(peer, not our model)" in capsys.readouterr().out


def test_the_peer_refuses_options_other_devices_and_odd_prompt_counts_in_one_line(capsys):
    needs_pytorch_frame()
    assert main(["peer", "--opt", "compile=true"]) == 2
    assert main(["peer", "--count-params", "--n-prompts", "11"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: the pytorch-frame peer takes no options, got compile",
                   "error: pytorch-frame's Trompt needs n_prompts divisible by 2 (its GroupNorm has 2 groups), "
                   "got 11"]
    with pytest.raises(ValueError, match="CPU only"):
        peers.load(device="cuda")


def test_without_pytorch_frame_bench_peer_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(peers, "installed", lambda: False)
    assert main(["peer", "--count-params"]) == 2
    assert capsys.readouterr().err == f"error: {peers.NOT_INSTALLED}\n"


# ---------------------------------------------------------------------------------------------
# How a peer's row is shown: hand-written records, no pytorch-frame needed


def record(backend: str, sps: float, **extra) -> dict:
    return {"backend": backend, "device": "cpu", "device_name": "Machine A", "dtype": "float32",
            "batch_size": 8, "options": {}, "config": SMALL.to_dict(), "data": "synthetic:tiny",
            "git_commit": "abc1234", "samples_per_sec": sps, "step_time_ms": 8000 / sps,
            "compile_time_s": 0.5, "peak_memory_mb": 100.0, "equivalence": None, **extra}


PEER = record("pytorch-frame", 0.5, peer=PEER_TITLE, equivalence="not the same model: prompts chained")


def test_the_report_labels_the_peer_and_gives_it_no_speed_up(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for name, r in (("ref.json", record("reference", 2.0, equivalence={"verdict": "pass", "worst": 0.0})),
                    ("torch.json", record("torch", 300.0)), ("peer.json", PEER)):
        (folder / name).write_text(json.dumps(r))
    out = tmp_path / "REPORT.md"
    assert main(["report", "--results", str(folder), "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text[text.index(BEGIN):text.index(END)].splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[1:]]
    assert [c[0] for c in cells] == ["reference float32", "torch float32",
                                     f"{PEER_TITLE} (peer, not our model)"]  # the peer after ours
    peer_row = cells[-1]
    assert peer_row[2] == "-"  # × reference: none, although the peer is 0.25 x the reference's speed
    assert "not the same model: prompts chained" in peer_row and "pass" not in " ".join(peer_row)
    assert cells[1][2] == "150.00"  # ours keep theirs: 300 / 2
    assert PEER_NOTE in text


def test_a_report_without_a_peer_has_no_peer_note(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "torch.json").write_text(json.dumps(record("torch", 300.0)))
    out = tmp_path / "REPORT.md"
    assert main(["report", "--results", str(folder), "--out", str(out)]) == 0
    assert PEER_NOTE not in out.read_text()


def test_the_comparison_table_never_takes_the_peer_as_baseline_nor_gives_it_a_ratio():
    rows = [{**record("torch", 300.0), "_file": "t.json"}, {**record("jax", 100.0), "_file": "j.json"},
            {**PEER, "_file": "p.json"}]
    baseline = results.pick_baseline(rows)
    assert baseline["backend"] == "jax"  # the slowest of ours, not the slower peer
    table = results.comparison_table(rows, baseline)
    peer_line = next(line for line in table.splitlines() if "(peer, not our model)" in line)
    assert peer_line.split(" | ")[3] == "-"
    assert "| torch float32 | cpu | 300.0 | 3.00 |" in table


# ---------------------------------------------------------------------------------------------
# `bench all` and the peer's row


def all_args(*argv: str):
    return build_parser().parse_args(["all", *argv])


def test_bench_all_adds_the_peer_to_a_full_float32_run_with_a_cpu_row(monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda: True)
    assert run_all.peer_wanted(all_args(), {"torch": "cpu"})
    assert not run_all.peer_wanted(all_args(), {"torch": "cuda"})  # nothing of ours on its device
    assert not run_all.peer_wanted(all_args("--backends", "torch"), {"torch": "cpu"})  # a subset
    assert not run_all.peer_wanted(all_args("--dtype", "float64"), {"torch": "cpu"})
    assert not run_all.peer_wanted(all_args("--no-peer"), {"torch": "cpu"})
    assert run_all.peer_wanted(all_args("--peer", "--backends", "torch"), {"torch": "cuda"})


def test_bench_all_without_pytorch_frame_says_so_or_refuses_peer(monkeypatch, capsys):
    monkeypatch.setattr(peers, "installed", lambda: False)
    assert not run_all.peer_wanted(all_args(), {"torch": "cpu"})
    assert capsys.readouterr().err == f"note: {peers.NOT_INSTALLED}; no peer row\n"
    with pytest.raises(ValueError, match="not installed"):
        run_all.peer_wanted(all_args("--peer"), {"torch": "cpu"})


def test_bench_all_runs_the_peer_as_one_more_row(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peers, "installed", lambda: True)
    monkeypatch.setattr(run_all, "machine_peaks_once", lambda out, devices: {})
    commands = []

    def run_command(cmd: list[str], env: dict[str, str]) -> int:
        commands.append(cmd)
        arg = dict(zip(cmd, cmd[1:]))
        r = PEER if cmd[3] == "peer" else record(arg["--backend"], 2.0 if arg["--backend"] == "reference" else 300)
        Path(arg["--json"]).parent.mkdir(parents=True, exist_ok=True)
        Path(arg["--json"]).write_text(json.dumps(r))
        return 0

    monkeypatch.setattr(run_all, "run_command", run_command)
    args = all_args("--backends", "reference,torch", "--device", "cpu", "--peer", "--processes", "1",
                    "--no-single-core", "--out", str(tmp_path))
    assert run_all.run(args) == 0
    peer_cmd = commands[-1]
    assert peer_cmd[2:4] == ["bench", "peer"] and peer_cmd[peer_cmd.index("--steps") + 1] == "1"
    assert (tmp_path / run_all.PEER_FILE).exists()
    table = (tmp_path / "bench_table.md").read_text()
    assert f"| {PEER_TITLE} (peer, not our model) | cpu | 0.5 | - |" in table
    assert "| torch float32 | cpu | 300.0 | 150.00 |" in table  # still against the reference


def test_the_peer_s_op_profile_sees_one_optimizer_step_per_batch():
    needs_pytorch_frame()
    from backends.data import load_dataset

    data = load_dataset("synthetic:tiny", n_columns=SMALL.n_columns)
    trainer = peers.load().trainer(None, SMALL, data.x_train, data.y_train)
    trainer.run([np.arange(8)])
    ops = trainer.op_times([np.arange(8), np.arange(8, 16), np.arange(16, 24)])
    calls = {name: n for name, _, n in ops}
    assert calls["Optimizer.step#AdamW.step"] == 3 and all(seconds > 0 for _, seconds, _ in ops)
