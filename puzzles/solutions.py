"""The 21 Tensor Puzzles, one `return` line each.

Rules (enforced by `python -m puzzles check`, see rules.py): a body is one `return` line under
80 columns that uses only `arange`, `where`, earlier puzzles, arithmetic and comparison
operators, `@`, indexing/slicing and `.shape`. Sizes arrive as Python ints, tensors as the
backend's integer (or boolean) tensors.

`arange` and `where` below are placeholders. `puzzles.bind("torch")` (see binding.py) gives every
function here a fresh global namespace in which those two names are torch's primitives, so this
one file runs unchanged on numpy, torch, jax, tinygrad, mlx and minitorch.

Habits that keep one source portable:
* a mask becomes a count (`where(mask, 1, 0)` or `mask * 1`) before any `@` or `+`: bool
  arithmetic and bool `@` differ between frameworks;
* every index stays in range (-n..n-1; negative ones wrap everywhere), using `%` or `where`:
  out of range, numpy and torch raise, jax clamps, tinygrad and mlx read zeros;
* no negative-step slices (torch refuses them).
"""

from puzzles.primitives import arange, where


def ones(i):
    return arange(i) * 0 + 1


def sum(a):
    return ones(a.shape[0]) @ a[:, None]


def outer(a, b):
    return a[:, None] * b


def diag(a):
    return a[arange(a.shape[0]), arange(a.shape[0])]


def eye(j):
    return where(arange(j)[:, None] == arange(j), 1, 0)


def triu(j):
    return where(arange(j)[:, None] <= arange(j), 1, 0)


def cumsum(a):
    return a @ triu(a.shape[0])


def diff(a, i):
    return a - where(arange(i) > 0, a[arange(i) - 1], 0)


def vstack(a, b):
    return where(arange(2)[:, None] == 0, a, b)


def roll(a, i):
    return a[(arange(i) + 1) % i]


def flip(a, i):
    return a[i - 1 - arange(i)]


def compress(g, v, i):
    return v @ where((cumsum(g * 1) * g - 1)[:, None] == arange(i), 1, 0)


def pad_to(a, i, j):
    return a @ where(arange(i)[:, None] == arange(j), 1, 0)


def sequence_mask(values, length):
    return where(arange(values.shape[1]) < length[:, None], values, 0)


def bincount(a, j):
    return ones(a.shape[0]) @ where(a[:, None] == arange(j), 1, 0)


def scatter_add(values, link, j):
    return values @ where(link[:, None] == arange(j), 1, 0)


def flatten(a, i, j):
    return a[arange(i * j) // j, arange(i * j) % j]


def linspace(i, j, n):
    return i + (j - i) * arange(n) / (n - 1 + (n == 1))


def heaviside(a, b):
    return where(a == 0, b, where(a > 0, 1, 0))


def repeat(a, d):
    return ones(d[0])[:, None] * a


def bucketize(v, boundaries):
    return where(v[:, None] >= boundaries, 1, 0) @ ones(boundaries.shape[0])
