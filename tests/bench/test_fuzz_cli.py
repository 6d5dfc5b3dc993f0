"""Fuzz the command line with malformed data directories: each must end with exit code 2 and a
single clear line on stderr (no traceback, no code run), or, where the input is usable after a
documented conversion, run and print a note."""

import os
import random
import zipfile

import numpy as np
import pytest
import torch

from bench.cli import main

C = 6  # a narrow table keeps every run instant; the model config follows the data's column count
RUN = ["--backend", "reference", "--n-prompts", "2", "--d-model", "4", "--n-cycles", "1", "--steps", "1",
       "--warmup", "1", "--repeats", "1", "--quiet"]


def good(n=12, c=C, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)).astype(np.float32), rng.normal(size=n).astype(np.float32)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pt(d, name, obj):
    torch.save(obj, d / name)


def npz(d, name, **arrays):
    np.savez(d / name, **arrays)


def both_pt(d, train, val=None):
    pt(d, "train.pt", train)
    pt(d, "val.pt", train if val is None else val)


def tensors(x, y):
    return (torch.as_tensor(x), torch.as_tensor(y))


X, Y = good()
MALFORMED = {
    "missing val.pt": lambda d: pt(d, "train.pt", tensors(X, Y)),
    "missing train.npz": lambda d: npz(d, "val.npz", X=X, Y=Y),
    "empty train.pt": lambda d: ((d / "train.pt").write_bytes(b""), pt(d, "val.pt", tensors(X, Y))),
    "truncated train.pt": lambda d: (both_pt(d, tensors(X, Y)),
                                     (d / "train.pt").write_bytes((d / "val.pt").read_bytes()[:300])),
    "random bytes .pt": lambda d: ((d / "train.pt").write_bytes(random.Random(1).randbytes(2000)),
                                   pt(d, "val.pt", tensors(X, Y))),
    "zip without pickle": lambda d: (zipfile.ZipFile(d / "train.pt", "w").writestr("a/b.txt", "hi"),
                                     pt(d, "val.pt", tensors(X, Y))),
    "pickle with code": lambda d: both_pt(d, (torch.as_tensor(X), Exploit(d / "pwned"))),
    "single tensor": lambda d: both_pt(d, torch.as_tensor(X)),
    "triple": lambda d: both_pt(d, (*tensors(X, Y), torch.zeros(1))),
    "dict": lambda d: both_pt(d, {"X": torch.as_tensor(X), "Y": torch.as_tensor(Y)}),
    "list Y": lambda d: both_pt(d, (torch.as_tensor(X), Y.tolist())),
    "X 1-D": lambda d: both_pt(d, tensors(X[:, 0], Y)),
    "X 3-D": lambda d: both_pt(d, tensors(X[:, :, None], Y)),
    "Y 2-D": lambda d: both_pt(d, tensors(X, Y[:, None])),
    "rows differ": lambda d: both_pt(d, tensors(X, Y[:-1])),
    "columns differ": lambda d: both_pt(d, tensors(X, Y), tensors(X[:, :-1], Y)),
    "zero rows": lambda d: both_pt(d, tensors(X[:0], Y[:0])),
    "constant target": lambda d: both_pt(d, tensors(X, np.ones_like(Y))),
    "one row": lambda d: both_pt(d, tensors(X[:1], Y[:1])),
    "bool X": lambda d: both_pt(d, tensors(X > 0, Y)),
    "npz wrong keys": lambda d: (npz(d, "train.npz", A=X, B=Y), npz(d, "val.npz", X=X, Y=Y)),
    "npz object array": lambda d: (npz(d, "train.npz", X=X.astype(object), Y=Y), npz(d, "val.npz", X=X, Y=Y)),
    "npz strings": lambda d: (npz(d, "train.npz", X=X.astype(str), Y=Y), npz(d, "val.npz", X=X, Y=Y)),
    "npz garbage": lambda d: ((d / "train.npz").write_bytes(b"PK\x03\x04 broken"), npz(d, "val.npz", X=X, Y=Y)),
    "not a directory": None,
    "no such path": None,
}


def invoke(capsys, data_arg):
    code = main([*RUN, "--data", data_arg])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_gives_exit_2_and_one_line(case, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if case == "not a directory":
        target = tmp_path / "file.pt"
        target.write_bytes(b"x")
    elif case == "no such path":
        target = tmp_path / "absent"
    else:
        MALFORMED[case](data_dir)
        target = data_dir
    code, err = invoke(capsys, str(target))
    assert code == 2, (case, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert "Traceback" not in err
    assert not (data_dir / "pwned").exists()


def test_there_are_at_least_twenty_cases():
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("case, note", [
    ("float64 X", "converted from float64"),
    ("all-NaN column", "all-NaN column"),
    ("NaN target", "NaN target"),
])
def test_convertible_input_runs_with_a_note(case, note, tmp_path, capsys):
    x, y = good()
    if case == "float64 X":
        x = x.astype(np.float64)
    elif case == "all-NaN column":
        x[:, 2] = np.nan
    else:
        y[3] = np.nan
    both_pt(tmp_path, tensors(x, y))
    code, err = invoke(capsys, str(tmp_path))
    assert code == 0, err
    assert "note: " in err and note in err
