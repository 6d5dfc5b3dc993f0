"""The 21 puzzles in order: name, parameters (tensors first, then sizes) and what each computes.

Puzzle k may call puzzles 1..k-1, so the order here is part of the rules.
"""

from __future__ import annotations

# name -> (parameter names, statement)
PUZZLES: dict[str, tuple[tuple[str, ...], str]] = {
    "ones": (("i",), "a vector of i ones"),
    "sum": (("a",), "a one-element vector holding the total of a"),
    "outer": (("a", "b"), "the outer product: out[r, c] = a[r] * b[c]"),
    "diag": (("a",), "the main diagonal of the square matrix a: out[k] = a[k, k]"),
    "eye": (("j",), "the j x j identity matrix"),
    "triu": (("j",), "the j x j matrix with 1 where row <= column, else 0"),
    "cumsum": (("a",), "the running total: out[k] = a[0] + ... + a[k]"),
    "diff": (("a", "i"), "out[0] = a[0], out[k] = a[k] - a[k-1] (same length as a)"),
    "vstack": (("a", "b"), "a 2 x i matrix whose rows are a and b"),
    "roll": (("a", "i"), "a shifted left by one, circularly: out[k] = a[(k + 1) % i]"),
    "flip": (("a", "i"), "a reversed: out[k] = a[i - 1 - k]"),
    "compress": (("g", "v", "i"), "the entries of v where g is True, packed to the front, then zeros"),
    "pad_to": (("a", "i", "j"), "the first min(i, j) entries of a, then zeros up to length j"),
    "sequence_mask": (("values", "length"), "values[r, c] where c < length[r], else 0"),
    "bincount": (("a", "j"), "out[b] = how many entries of a equal b, for b < j"),
    "scatter_add": (("values", "link", "j"), "out[b] = the sum of values[k] over all k with link[k] == b"),
    "flatten": (("a", "i", "j"), "the i x j matrix a read row by row: out[r * j + c] = a[r, c]"),
    "linspace": (("i", "j", "n"), "n evenly spaced floats from i[0] to j[0]; for n = 1 just i[0]"),
    "heaviside": (("a", "b"), "b[k] where a[k] == 0, 1 where a[k] > 0, 0 where a[k] < 0"),
    "repeat": (("a", "d"), "d[0] copies of a stacked as rows"),
    "bucketize": (("v", "boundaries"), "for each v[k], how many of the sorted boundaries are <= v[k]"),
}

PUZZLE_NAMES: tuple[str, ...] = tuple(PUZZLES)
