"""Plain-Python loop specifications of the 21 puzzles: the oracle every backend is tested against.

Inputs are nested lists of ints (or bools) and Python ints; each spec returns a fresh nested
list of the declared shape. Nothing here uses a tensor library, so a spec cannot share a bug
with a solution. Loops follow the puzzle statements (catalog.py) literally.
"""

from __future__ import annotations

Vector = list
Matrix = list


def zeros(rows: int, cols: int | None = None) -> list:
    if cols is None:
        return [0] * rows
    return [[0] * cols for _ in range(rows)]


def ones_spec(i: int) -> Vector:
    out = zeros(i)
    for k in range(i):
        out[k] = 1
    return out


def sum_spec(a: Vector) -> Vector:
    out = zeros(1)
    for value in a:
        out[0] += value
    return out


def outer_spec(a: Vector, b: Vector) -> Matrix:
    out = zeros(len(a), len(b))
    for r in range(len(a)):
        for c in range(len(b)):
            out[r][c] = a[r] * b[c]
    return out


def diag_spec(a: Matrix) -> Vector:
    out = zeros(len(a))
    for k in range(len(a)):
        out[k] = a[k][k]
    return out


def eye_spec(j: int) -> Matrix:
    out = zeros(j, j)
    for k in range(j):
        out[k][k] = 1
    return out


def triu_spec(j: int) -> Matrix:
    out = zeros(j, j)
    for r in range(j):
        for c in range(j):
            if r <= c:
                out[r][c] = 1
    return out


def cumsum_spec(a: Vector) -> Vector:
    out = zeros(len(a))
    total = 0
    for k in range(len(a)):
        total += a[k]
        out[k] = total
    return out


def diff_spec(a: Vector, i: int) -> Vector:
    out = zeros(i)
    out[0] = a[0]
    for k in range(1, i):
        out[k] = a[k] - a[k - 1]
    return out


def vstack_spec(a: Vector, b: Vector) -> Matrix:
    out = zeros(2, len(a))
    for k in range(len(a)):
        out[0][k] = a[k]
        out[1][k] = b[k]
    return out


def roll_spec(a: Vector, i: int) -> Vector:
    out = zeros(i)
    for k in range(i):
        out[k] = a[(k + 1) % i]
    return out


def flip_spec(a: Vector, i: int) -> Vector:
    out = zeros(i)
    for k in range(i):
        out[k] = a[i - 1 - k]
    return out


def compress_spec(g: Vector, v: Vector, i: int) -> Vector:
    out = zeros(i)
    filled = 0
    for k in range(i):
        if g[k]:
            out[filled] = v[k]
            filled += 1
    return out


def pad_to_spec(a: Vector, i: int, j: int) -> Vector:
    out = zeros(j)
    for k in range(min(i, j)):
        out[k] = a[k]
    return out


def sequence_mask_spec(values: Matrix, length: Vector) -> Matrix:
    rows, cols = len(values), len(values[0])
    out = zeros(rows, cols)
    for r in range(rows):
        for c in range(cols):
            if c < length[r]:
                out[r][c] = values[r][c]
    return out


def bincount_spec(a: Vector, j: int) -> Vector:
    out = zeros(j)
    for value in a:
        out[value] += 1
    return out


def scatter_add_spec(values: Vector, link: Vector, j: int) -> Vector:
    out = zeros(j)
    for k in range(len(values)):
        out[link[k]] += values[k]
    return out


def flatten_spec(a: Matrix, i: int, j: int) -> Vector:
    out = zeros(i * j)
    for r in range(i):
        for c in range(j):
            out[r * j + c] = a[r][c]
    return out


def linspace_spec(i: Vector, j: Vector, n: int) -> Vector:
    out = [0.0] * n
    for k in range(n):
        out[k] = i[0] + (j[0] - i[0]) * k / max(1, n - 1)
    return out


def heaviside_spec(a: Vector, b: Vector) -> Vector:
    out = zeros(len(a))
    for k in range(len(a)):
        if a[k] == 0:
            out[k] = b[k]
        elif a[k] > 0:
            out[k] = 1
    return out


def repeat_spec(a: Vector, d: Vector) -> Matrix:
    out = zeros(d[0], len(a))
    for r in range(d[0]):
        for c in range(len(a)):
            out[r][c] = a[c]
    return out


def bucketize_spec(v: Vector, boundaries: Vector) -> Vector:
    out = zeros(len(v))
    for k in range(len(v)):
        for boundary in boundaries:
            if boundary <= v[k]:
                out[k] += 1
    return out
