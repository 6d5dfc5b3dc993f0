"""An independent Trompt written from the specification with explicit loops, for tiny sizes only.

It shares no code with `reference/` and uses no framework: plain Python loops over batch rows,
cells, prompts and columns, with numpy only for length-D vectors. It works on complex numbers,
so that gradients come from the complex-step derivative, Im f(θ + ih) / h, which has no
subtractive cancellation and is exact to rounding for this analytic-almost-everywhere function
(relu and the softmax shift branch on the real part). That gives a gradient oracle good to
~1e-15, far better than finite differences, by a route that has nothing in common with autograd.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5


def relu(v: np.ndarray) -> np.ndarray:
    return np.where(v.real > 0, v, 0)


def layer_norm(v: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = sum(v) / len(v)
    var = sum((v - mean) ** 2) / len(v)  # biased variance, as torch's LayerNorm
    return (v - mean) / np.sqrt(var + EPS) * gamma + beta


def softmax(values: list) -> list:
    shift = max(v.real for v in values)  # a real constant shift leaves the softmax unchanged
    exps = [np.exp(v - shift) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def cell_output(p: dict, n: int, x_row: np.ndarray, C: int, P: int) -> list[np.ndarray]:
    """O[p] (a D-vector per prompt) of cell n for one input row."""
    q = lambda name: p[f"tcells.{n}.{name}"]
    emb = [layer_norm(relu(x_row[c] * q("feature_emb_weight")[c] + q("feature_emb_bias")[c]),
                      q("ln_emb.weight"), q("ln_emb.bias")) for c in range(C)]
    keys = [layer_norm(q("emb_column")[c], q("ln_col.weight"), q("ln_col.bias")) for c in range(C)]
    out = []
    for j in range(P):
        fused = np.concatenate([layer_norm(q("emb_prompt")[j], q("ln_prompt.weight"), q("ln_prompt.bias")),
                                p["prompt"][j]])
        query = q("dense_imp.weight") @ fused + q("dense_imp.bias") + q("emb_prompt")[j]
        weights = softmax([sum(query * keys[c]) for c in range(C)])
        w, e = q("dense_expand.weight")[j, 0], q("dense_expand.bias")[j]
        # pooled sum over columns of the expanded embedding w*E + e + E
        out.append(sum(weights[c] * (w * emb[c] + e + emb[c]) for c in range(C)))
    return out


def head(p: dict, prompts_out: list[np.ndarray]) -> complex:
    scores = softmax([sum(p["tdown.dense0.weight"][0] * o) + p["tdown.dense0.bias"][0] for o in prompts_out])
    pooled = sum(s * o for s, o in zip(scores, prompts_out))
    hidden = relu(p["tdown.dense1.weight"] @ pooled + p["tdown.dense1.bias"])
    hidden = layer_norm(hidden, p["tdown.ln.weight"], p["tdown.ln.bias"])
    return sum(p["tdown.dense_out.weight"][0] * hidden) + p["tdown.dense_out.bias"][0]


def forward(p: dict, x: np.ndarray, n_cycles: int) -> np.ndarray:
    C = x.shape[1]
    P = p["prompt"].shape[0]
    pred = np.zeros((x.shape[0], n_cycles), dtype=complex)
    for b in range(x.shape[0]):
        for n in range(n_cycles):
            pred[b, n] = head(p, cell_output(p, n, x[b], C, P))
    return pred


def loss(p: dict, x: np.ndarray, y: np.ndarray, n_cycles: int) -> complex:
    pred = forward(p, x, n_cycles)
    return sum((pred[b, n] - y[b]) ** 2 for b in range(len(y)) for n in range(n_cycles)) / pred.size


def complex_step_grads(p: dict, x: np.ndarray, y: np.ndarray, n_cycles: int, h: float = 1e-30) -> dict:
    """d loss / d theta for every parameter element, one complex evaluation each."""
    base = {k: np.asarray(v, dtype=complex) for k, v in p.items()}
    grads = {}
    for name, value in base.items():
        g = np.zeros(value.shape)
        for idx in np.ndindex(value.shape):
            value[idx] += 1j * h
            g[idx] = loss(base, x, y, n_cycles).imag / h
            value[idx] -= 1j * h
        grads[name] = g
    return grads
