"""The data pipeline: synthetic data, cleaning, batch order, file formats and malformed files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backends import data
from backends.data import DataError, epoch_batches, load_dataset


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic:tiny")


def test_tiny_preset_shapes_and_dtypes(tiny):
    n_train, n_val = data.PRESETS["tiny"]
    assert tiny.x_train.shape == (n_train, 984) and tiny.x_val.shape == (n_val, 984)
    assert tiny.x_train.dtype == np.float32 and tiny.y_train.shape == (n_train,)
    assert n_train % 8 != 0  # the partial last batch is exercised


def test_synthetic_is_deterministic_and_seeded():
    a = data.make_synthetic(300, 50, seed=3)
    b = data.make_synthetic(300, 50, seed=3)
    c = data.make_synthetic(300, 50, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(np.nan_to_num(a[0]), np.nan_to_num(c[0]))


def test_rows_do_not_depend_on_split_sizes():
    small = data.make_synthetic(100, 10, seed=0)
    large = data.make_synthetic(100, 500, seed=0)
    np.testing.assert_array_equal(small[0], large[0])
    np.testing.assert_array_equal(small[2], large[2][:10])


def test_synthetic_looks_like_the_real_table():
    x, y, _, _ = data.make_synthetic(4000, 1)
    nan_frac = np.isnan(x).mean()
    assert 0.03 < nan_frac < 0.08, nan_frac
    finite = np.nan_to_num(x)
    std = finite.std(axis=0)
    assert (std == 0).sum() >= 3  # constant columns exist
    spans = np.nanmax(x, axis=0) - np.nanmin(x, axis=0)
    assert spans.max() / np.median(spans[spans > 0]) > 100  # mixed, unscaled column scales
    assert np.nanmax(x[:, 2]) > 1000  # minute-of-day column on its raw scale
    cols = finite.T
    assert len({c.tobytes() for c in cols[std > 0]}) < (std > 0).sum()  # some exact duplicates
    assert 4.0 < y.mean() < 5.0 and 0.3 < y.std() < 0.5


def test_target_is_learnable_from_the_features():
    """A plain least-squares fit on a few transformed features beats predicting the mean by far:
    the target really depends on the columns (Trompt's own learning is tested with the backends)."""
    x_tr, y_tr, x_va, y_va = data.make_synthetic(3000, 1000, seed=1)
    def feats(x):
        f = np.sign(np.nan_to_num(x)) * np.log1p(np.abs(np.nan_to_num(x)))
        return np.c_[f, np.ones(len(f))]
    coef, *_ = np.linalg.lstsq(feats(x_tr), y_tr, rcond=1e-3)
    mae = np.abs(feats(x_va) @ coef - y_va).mean()
    baseline = np.abs(y_tr.mean() - y_va).mean()
    assert mae < 0.85 * baseline, (mae, baseline)


def test_cleaning_matches_the_original(tiny):
    x_tr, y_tr, x_va, y_va = data.make_synthetic(*data.PRESETS["tiny"])
    np.testing.assert_array_equal(tiny.x_train, np.where(np.isnan(x_tr), 0, x_tr))
    mean = sum(float(v) for v in y_tr) / len(y_tr)
    std = (sum((float(v) - mean) ** 2 for v in y_tr) / (len(y_tr) - 1)) ** 0.5  # Bessel
    assert tiny.y_mean == pytest.approx(mean, rel=1e-12) and tiny.y_std == pytest.approx(std, rel=1e-12)
    np.testing.assert_allclose(tiny.y_train, (y_tr - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tiny.y_val, y_va)  # validation targets stay raw


def test_nan_to_num_semantics():
    x = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32).repeat(2, 0)
    d = data.clean(x, np.array([1.0, 2.0], np.float32), x, np.array([np.nan, 3.0], np.float32), "t")
    np.testing.assert_array_equal(d.x_train[0], [0, np.finfo(np.float32).max, -np.finfo(np.float32).max, 1])
    assert d.y_val[0] == 0.0


def test_epoch_batches_cover_every_row_once_with_a_partial_batch():
    batches = epoch_batches(1029, 8, epoch=0, seed=0)
    assert [len(b) for b in batches[:-1]] == [8] * 128 and len(batches[-1]) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(1029))


def test_batch_order_is_deterministic_and_reshuffled_every_epoch():
    a, b = epoch_batches(100, 8, 0, 0), epoch_batches(100, 8, 0, 0)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    c = epoch_batches(100, 8, 1, 0)
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.arange(100))


def test_validation_mae_uses_train_statistics(tiny):
    pred = np.zeros((len(tiny.y_val), 6))  # predicting 0 in standardised units = the train mean
    assert data.validation_mae(pred, tiny) == pytest.approx(np.abs(tiny.y_mean - tiny.y_val).mean(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# File formats


def write_pt(folder: Path, x_tr, y_tr, x_va, y_va) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save((torch.as_tensor(x_tr), torch.as_tensor(y_tr)), folder / "train.pt")
    torch.save((torch.as_tensor(x_va), torch.as_tensor(y_va)), folder / "val.pt")
    return folder


def test_pt_and_npz_round_trip_equal_the_synthetic_source(tmp_path):
    raw = data.make_synthetic(40, 20, n_columns=984)
    write_pt(tmp_path / "pt", *raw)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "train.npz", X=raw[0], Y=raw[1])
    np.savez(tmp_path / "npz" / "val.npz", X=raw[2], Y=raw[3])
    expected = data.clean(*raw, "x")
    for sub in ("pt", "npz"):
        got = load_dataset(str(tmp_path / sub))
        np.testing.assert_array_equal(got.x_train, expected.x_train)
        np.testing.assert_array_equal(got.y_train, expected.y_train)
        np.testing.assert_array_equal(got.x_val, expected.x_val)
        assert got.notes == []


class RunsCode:
    """An object whose unpickling would run a command (what a malicious .pt file carries)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save((torch.zeros(2, 3), RunsCode(str(marker))), folder / "train.pt")
    torch.save((torch.zeros(2, 3), torch.zeros(2)), folder / "val.pt")
    with pytest.raises(DataError, match="could not be loaded safely"):
        load_dataset(str(folder))
    assert not marker.exists()


def npz_dir(tmp_path, x_tr, y_tr, x_va=None, y_va=None):
    np.savez(tmp_path / "train.npz", X=x_tr, Y=y_tr)
    np.savez(tmp_path / "val.npz", X=x_tr if x_va is None else x_va, Y=y_tr if y_va is None else y_va)
    return str(tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "absent"), "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and str(p / "f.txt"), "is not a directory"),
    (lambda p: str(p), "holds neither"),
    (lambda p: (np.savez(p / "train.npz", X=np.zeros((4, 3)), Y=np.zeros(4)), str(p))[1],
     "val.npz is missing"),
    (lambda p: npz_dir(p, np.zeros(4), np.zeros(4)), "X must be 2-D"),
    (lambda p: npz_dir(p, np.zeros((4, 3)), np.zeros((4, 1))), "Y must be 1-D"),
    (lambda p: npz_dir(p, np.zeros((4, 3)), np.zeros(5)), "rows but Y has"),
    (lambda p: npz_dir(p, np.zeros((4, 3)), np.arange(4.0), np.zeros((4, 2)), np.zeros(4)),
     "columns but val"),
    (lambda p: npz_dir(p, np.zeros((4, 3)), np.ones(4)), "standard deviation"),
    (lambda p: npz_dir(p, np.array([["a"] * 3] * 4), np.arange(4.0)), "expected numbers"),
    (lambda p: npz_dir(p, np.zeros((4, 3), object), np.arange(4.0)), "refused"),
])
def test_malformed_npz_inputs_raise_one_line(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as info:
        load_dataset(make(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("payload, message", [
    (b"", "is empty"),
    (b"not a zip file at all", "could not be loaded safely"),
    ("truncated", "could not be loaded safely"),
    ((torch.zeros(3, 2),), "must hold a tuple"),
    ((torch.zeros(3, 2), torch.zeros(3), torch.zeros(3)), "of length 3"),
    ({"X": torch.zeros(3, 2)}, "must hold a tuple"),
    ((torch.zeros(3, 2), [1.0, 2.0, 3.0]), "expected a tensor"),
])
def test_malformed_pt_inputs_raise_one_line(tmp_path, payload, message):
    good = tmp_path / "good.pt"
    torch.save((torch.zeros(3, 2), torch.arange(3.0)), good)
    target = tmp_path / "train.pt"
    if payload == "truncated":
        target.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif isinstance(payload, bytes):
        target.write_bytes(payload)
    else:
        torch.save(payload, target)
    good.rename(tmp_path / "val.pt")
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(tmp_path))
    assert "\n" not in str(info.value)


def test_float64_x_is_converted_and_all_nan_columns_are_kept_with_notes(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 4))
    x[:, 1] = np.nan
    d = load_dataset(npz_dir(tmp_path, x, np.arange(6.0)))
    assert d.x_train.dtype == np.float32 and d.x_train.shape == (6, 4)
    assert (d.x_train[:, 1] == 0).all()
    joined = " ".join(d.notes)
    assert "converted from float64" in joined and "all-NaN column" in joined


def test_cli_reports_bad_data_in_one_line(tmp_path):
    np.savez(tmp_path / "train.npz", X=np.zeros((4, 3)), Y=np.zeros((4, 2)))
    np.savez(tmp_path / "val.npz", X=np.zeros((4, 3)), Y=np.zeros(4))
    out = subprocess.run([sys.executable, "-m", "bench", "--backend", "reference", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Y must be 1-D" in out.stderr
