"""Module 4: convolution, pooling, max, softmax and dropout against numpy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitorch

from .strategies import FAST, SIMPLE, arrays, assert_tensor_equals, few, permuted_tensor

pytestmark = pytest.mark.xdist_group("minitorch_numba")


def conv1d_numpy(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out[b, o, j] = sum over c, t of x[b, c, j + t] * w[o, c, t], zero past the right edge."""
    batch, _, width = x.shape
    out_channels, _, k = w.shape
    padded = np.concatenate([x, np.zeros((batch, x.shape[1], k))], axis=2)
    out = np.zeros((batch, out_channels, width))
    for j in range(width):
        out[:, :, j] = np.einsum("bct,oct->bo", padded[:, :, j : j + k], w)
    return out


def conv2d_numpy(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Top-left anchored 2-D convolution with zeros past the bottom and right edges."""
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = w.shape
    padded = np.zeros((batch, channels, height + kh, width + kw))
    padded[:, :, :height, :width] = x
    out = np.zeros((batch, out_channels, height, width))
    for i in range(height):
        for j in range(width):
            out[:, :, i, j] = np.einsum("bcuv,ocuv->bo", padded[:, :, i : i + kh, j : j + kw], w)
    return out


def numeric_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d sum(f(x)) / dx for every element, by central differences in float64."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (f(up).sum() - f(down).sum()) / (2 * eps)
    return grad


def test_conv1d_course_example() -> None:
    t = minitorch.tensor([0, 1, 2, 3]).view(1, 1, 4)
    w = minitorch.tensor([[1, 2, 3]]).view(1, 1, 3)
    assert_tensor_equals(minitorch.conv1d(t, w), np.array([[[8.0, 14.0, 8.0, 3.0]]]))


@few
@given(st.data(), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 3))
def test_conv1d_matches_numpy_and_full_gradients(data, batch, cin, cout, width, k) -> None:
    x = data.draw(arrays((batch, cin, width)))
    w = data.draw(arrays((cout, cin, k)))
    tx = data.draw(permuted_tensor(x, SIMPLE))
    tw = data.draw(permuted_tensor(w, FAST))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    out = minitorch.conv1d(tx, tw)
    np.testing.assert_allclose(out.to_numpy(), conv1d_numpy(x, w), rtol=1e-9, atol=1e-8)
    out.sum().backward()
    # conv is linear in each argument: a unit-step central difference is exact up to rounding.
    np.testing.assert_allclose(tx.grad.to_numpy(), numeric_gradient(lambda v: conv1d_numpy(v, w), x, eps=1.0),
                               atol=1e-4)
    np.testing.assert_allclose(tw.grad.to_numpy(), numeric_gradient(lambda v: conv1d_numpy(x, v), w, eps=1.0),
                               atol=1e-4)


@few
@given(st.data(), st.integers(1, 2), st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
def test_conv2d_matches_numpy_and_full_gradients(data, batch, cin, cout, height, width) -> None:
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(arrays((batch, cin, height, width)))
    w = data.draw(arrays((cout, cin, kh, kw)))
    tx = data.draw(permuted_tensor(x, FAST))
    tw = data.draw(permuted_tensor(w, SIMPLE))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    out = minitorch.conv2d(tx, tw)
    np.testing.assert_allclose(out.to_numpy(), conv2d_numpy(x, w), rtol=1e-9, atol=1e-8)
    (out * out).sum().backward()  # a non-uniform output gradient (2 * out)
    # d sum(out²) = Σ 2·out·d out, and conv is linear in each argument: so the oracle is the
    # central difference of the LINEAR map v -> Σ 2·out·conv(v), exact up to rounding with a unit
    # step (a small step on out² itself loses digits to cancellation when out is ~1e5).
    out_ref = conv2d_numpy(x, w)
    np.testing.assert_allclose(
        tx.grad.to_numpy(), numeric_gradient(lambda v: 2 * out_ref * conv2d_numpy(v, w), x, eps=1.0),
        rtol=1e-4, atol=1e-3,
    )
    np.testing.assert_allclose(
        tw.grad.to_numpy(), numeric_gradient(lambda v: 2 * out_ref * conv2d_numpy(x, v), w, eps=1.0),
        rtol=1e-4, atol=1e-3,
    )


def test_conv_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match=r"channels.*\(1, 2, 4\)"):
        minitorch.conv1d(minitorch.rand((1, 2, 4)), minitorch.rand((1, 3, 2)))
    with pytest.raises(ValueError, match="4-D"):
        minitorch.conv2d(minitorch.rand((1, 2, 4)), minitorch.rand((1, 2, 2)))


@few
@given(st.data(), st.sampled_from([(1, 1), (2, 2), (2, 1), (1, 2), (4, 2)]))
def test_tile_and_pooling_match_numpy(data, kernel) -> None:
    kh, kw = kernel
    x = data.draw(arrays((2, 2, 4, 4)))
    t = data.draw(permuted_tensor(x, SIMPLE))
    windows = x.reshape(2, 2, 4 // kh, kh, 4 // kw, kw)
    tiled, nh, nw = minitorch.tile(t, kernel)
    assert (nh, nw) == (4 // kh, 4 // kw)
    assert_tensor_equals(tiled, windows.transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, nh, nw, kh * kw))
    assert_tensor_equals(minitorch.avgpool2d(t, kernel), windows.mean(axis=(3, 5)), atol=1e-9)
    assert_tensor_equals(minitorch.maxpool2d(t, kernel), windows.max(axis=(3, 5)))
    minitorch.grad_check(lambda a: minitorch.avgpool2d(a, kernel), t)
    with pytest.raises(ValueError, match="divide"):
        minitorch.tile(t, (3, 1))


@few
@given(st.data(), arrays((2, 3, 4)))
def test_max_value_argmax_and_gradient(data, x: np.ndarray) -> None:
    # Distinct values so the argmax is unique and the gradient well defined.
    x = x + np.arange(x.size).reshape(x.shape) * 1e-3
    t = data.draw(permuted_tensor(x, FAST))
    for dim in range(3):
        assert_tensor_equals(minitorch.max(t, dim), x.max(axis=dim, keepdims=True))
        one_hot = (x == x.max(axis=dim, keepdims=True)).astype(float)
        assert_tensor_equals(minitorch.argmax(t, dim), one_hot)
        t.requires_grad_(True)
        t.zero_grad_()
        weights = minitorch.tensor(np.arange(1.0, 1.0 + x.size / x.shape[dim]).reshape(
            tuple(1 if i == dim else s for i, s in enumerate(x.shape))), backend=FAST)
        (minitorch.max(t, dim) * weights).sum().backward()
        assert_tensor_equals(t.grad, one_hot * weights.to_numpy())


@few
@given(st.data(), arrays((2, 3, 4)), st.integers(0, 2))
def test_softmax_and_logsoftmax_match_numpy(data, x: np.ndarray, dim: int) -> None:
    t = data.draw(permuted_tensor(x, FAST))
    shifted = x - x.max(axis=dim, keepdims=True)
    expected = np.exp(shifted) / np.exp(shifted).sum(axis=dim, keepdims=True)
    assert_tensor_equals(minitorch.softmax(t, dim), expected, atol=1e-12)
    assert_tensor_equals(minitorch.logsoftmax(t, dim=dim), np.log(expected), atol=1e-9)
    small = data.draw(permuted_tensor(x / 50.0, FAST))
    minitorch.grad_check(lambda a: minitorch.softmax(a, dim) * minitorch.tensor([1.0, 2.0, 3.0, 4.0]), small)
    minitorch.grad_check(lambda a: minitorch.logsoftmax(a, dim) * minitorch.tensor([1.0, 2.0, 3.0, 4.0]), small)


def test_softmax_is_stable_for_large_inputs() -> None:
    t = minitorch.tensor([[1000.0, 1001.0], [-1000.0, -1000.0]])
    assert_tensor_equals(minitorch.softmax(t, 1), np.array([[1 / (1 + np.e), np.e / (1 + np.e)], [0.5, 0.5]]))
    assert np.all(np.isfinite(minitorch.logsoftmax(t, 1).to_numpy()))


def test_dropout_rates_and_scaling() -> None:
    t = minitorch.rand((50, 40), backend=FAST) + 1.0
    assert minitorch.dropout(t, 0.0) is t and minitorch.dropout(t, 0.7, ignore=True) is t
    assert minitorch.dropout(t, 1.0).to_numpy().max() == 0.0
    out = minitorch.dropout(t, 0.25).to_numpy()
    kept = out != 0
    # 2000 draws at keep probability 0.75: the kept fraction is within 0.05 of it (about 5 sigma).
    assert abs(kept.mean() - 0.75) < 0.05
    np.testing.assert_allclose(out[kept], t.to_numpy()[kept] / 0.75)
    with pytest.raises(ValueError, match="rate"):
        minitorch.dropout(t, 1.5)


def test_layers_have_parameters_and_shapes() -> None:
    conv = minitorch.Conv2d(1, 3, (2, 2), FAST)
    lin = minitorch.Linear(3 * 4 * 4, 5, FAST)
    x = minitorch.rand((2, 1, 4, 4), backend=FAST)
    h = conv(x)
    assert h.shape == (2, 3, 4, 4)
    assert lin(h.view(2, 48)).shape == (2, 5)
    assert {name for name, _ in conv.named_parameters()} == {"weights", "bias"}
    assert minitorch.Conv1d(2, 3, 3, FAST)(minitorch.rand((1, 2, 5), backend=FAST)).shape == (1, 3, 5)
