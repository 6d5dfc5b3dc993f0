// The importance mask and the head's prompt pooling (F2, F5) as fused CPU kernels, framework-free,
// forward and backward. What torch or XLA run as a dozen separate ops over (N, P, C) tensors (the
// logits Q Kᵀ, their softmax, the two products with it that r5's head needs, and as many again in
// the backward) becomes a few passes per cell, each over one cell's mask while it is in cache, and
// three matrix products with a register-blocked AVX-512 tile. The maths and the notation are in
// backends/torch/fused.py ("The mask"); the torch binding is backends/torch/fused_block.cpp.
//
// Per cell (the cell index is left out): Q (P, D), K (C, D), t (B, C), and per prompt scale s, shift
// and e (the expansion bias):
//
//   M = softmax_c(Q Kᵀ)                 (P, C)  the importance mask
//   L = t Mᵀ                            (B, P)
//   π = softmax_p(s ∘ L + shift)        (B, P)  the head's prompt weights
//   α = (π ∘ s) M                       (B, C)  column weights of the pooled vector
//   offset = π · e                      (B)
//
// Tasks. Every loop below is a task over one cell and one block of rows (prompts p or columns c);
// each task writes its own outputs, so nothing needs atomics, and the caller runs the tasks of a
// phase on its thread pool and the phases one after another.
//
// Products. The three products with P·C·D terms (Q Kᵀ forward; dS K and dSᵀ Q backward) run through
// `tile`: TR rows × NR columns of the result held in registers (NR = 32: two AVX-512 vectors of
// float32), the sum over k in loop order, one broadcast of A and two vector loads of B per k. Row k
// of B must hold NR readable numbers: every caller passes either full panels read in place or a
// zero-padded copy of an edge panel (`Panel`).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "fused_block.h"  // for_row_blocks

namespace fused_mask {

using fused_block::for_row_blocks;

constexpr int NR = 32;  // result columns per tile (vector lanes)
constexpr int TR = 8;   // result rows per tile: 8 × 2 accumulators of 16 lanes, 2 of B, 1 broadcast

// Ceil division: how many blocks of `size` cover n.
inline int64_t blocks(int64_t n, int64_t size) { return (n + size - 1) / size; }

// ---------------------------------------------------------------------------------------------
// The product tile: acc[r][l] += Σ_k A(r, k) B[k, l] for r < R, l < NR, with A(r, k) =
// a[r * a_row + k * a_col] (so A may be read transposed) and B row-major with row stride ldb.

template <typename T, int R>
inline void tile(const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb, int64_t K,
                 T (&acc)[R][NR]) {
  for (int64_t k = 0; k < K; ++k) {
    const T* bk = b + k * ldb;
    for (int r = 0; r < R; ++r) {
      const T ar = a[r * a_row + k * a_col];
      for (int l = 0; l < NR; ++l) acc[r][l] += ar * bk[l];
    }
  }
}

// out[k * ldo + j] = in[j * ldi + k] for j < rows, k < cols, in blocks of 16 × 16 and in scalar code:
// vectorised, the compiler turns the strided side into gathers or scatters, which were several
// times slower on the AMD EPYC measured.
template <typename T>
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void transpose(const T* in, int64_t ldi, T* out, int64_t ldo, int64_t rows, int64_t cols) {
  constexpr int64_t BLOCK = 16;
  for (int64_t j0 = 0; j0 < rows; j0 += BLOCK)
    for (int64_t k0 = 0; k0 < cols; k0 += BLOCK) {
      const int64_t jn = std::min(BLOCK, rows - j0), kn = std::min(BLOCK, cols - k0);
      for (int64_t k = 0; k < kn; ++k)
        for (int64_t j = 0; j < jn; ++j) out[(k0 + k) * ldo + j0 + j] = in[(j0 + j) * ldi + k0 + k];
    }
}

// Columns j0..j0+NR of B's K rows, as the tile reads them: in place when all NR columns exist,
// else (an edge panel) copied into a zero-padded (K, NR) buffer.
template <typename T>
struct Panel {
  const T* b;
  int64_t ldb, width;
  std::vector<T> padded;

  Panel(const T* B, int64_t ld, int64_t K, int64_t cols, int64_t j0) {
    width = std::min<int64_t>(NR, cols - j0);
    if (width == NR) {
      b = B + j0, ldb = ld;
      return;
    }
    padded.assign(K * NR, T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < width; ++j) padded[k * NR + j] = B[k * ld + j0 + j];
    b = padded.data(), ldb = NR;
  }
};

// out[i, j] = Σ_k A(i, k) B[k, j] for rows i0..i1 and the NR-column panel of B starting at column
// j0 (of `cols`), out row-major with row stride ldo; rows in tiles of TR, then one at a time.
template <typename T>
void product_panel(const T* a, int64_t a_row, int64_t a_col, const T* B, int64_t ldb, int64_t K, int64_t cols,
                   int64_t j0, T* out, int64_t ldo, int64_t i0, int64_t i1) {
  const Panel<T> panel(B, ldb, K, cols, j0);
  for_row_blocks<TR>(i0, i1, [&]<int R>(int64_t i) {
    T acc[R][NR] = {};
    tile<T, R>(a + i * a_row, a_row, a_col, panel.b, panel.ldb, K, acc);
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < panel.width; ++j) out[(i + r) * ldo + j0 + j] = acc[r][j];
  });
}

// The same for every panel of B's columns.
template <typename T>
void product_rows(const T* a, int64_t a_row, int64_t a_col, const T* B, int64_t ldb, int64_t K, int64_t cols,
                  T* out, int64_t ldo, int64_t i0, int64_t i1) {
  for (int64_t j0 = 0; j0 < cols; j0 += NR) product_panel(a, a_row, a_col, B, ldb, K, cols, j0, out, ldo, i0, i1);
}

// ---------------------------------------------------------------------------------------------
// exp for the softmaxes: AVX-512 for float32 (a degree-6 polynomial after the usual range
// reduction; the tests hold the softmaxes built on it to float64), std::exp otherwise.

#if defined(__AVX512F__)
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));  // below this exp underflows; softmax inputs are ≤ 0
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x − n ln2 in two parts (Cody–Waite), |r| ≤ ln2 / 2
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);  // p · 2^n
}
#endif

// row[c] = exp(row[c] − shift) for c < n; returns Σ_c row[c] (in float64).
template <typename T>
inline double exp_shifted(T* row, int64_t n, T shift) {
  double sum = 0.0;
  int64_t c = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    __m512 acc = _mm512_setzero_ps();
    const __m512 s = _mm512_set1_ps(shift);
    for (; c + 16 <= n; c += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + c), s));
      _mm512_storeu_ps(row + c, e);
      acc = _mm512_add_ps(acc, e);
    }
    if (c < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - c)) - 1);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + c), s));
      _mm512_mask_storeu_ps(row + c, m, e);
      acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
      c = n;
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    for (float v : lanes) sum += v;
  }
#endif
  for (; c < n; ++c) {
    row[c] = std::exp(row[c] - shift);
    sum += row[c];
  }
  return sum;
}

// 64-byte vectors of T (16 float32 or 8 float64 lanes) for the row loops below: GCC's vector
// extension keeps them in registers, where plain lane arrays in these loops were spilled to memory.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t VW = 64 / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void store(T* p, const Vec<T>& v) { std::memcpy(p, &v, sizeof v); }

// The largest of n numbers, lane-wise first.
template <typename T>
inline T largest(const T* row, int64_t n) {
  Vec<T> top = Vec<T>{} + row[0];  // row[0] in every lane
  int64_t c = 0;
  for (; c + VW<T> <= n; c += VW<T>) {
    const Vec<T> v = load(row + c);
    top = v > top ? v : top;
  }
  T out = row[0];
  for (; c < n; ++c) out = std::max(out, row[c]);
  for (int64_t l = 0; l < VW<T>; ++l) out = std::max(out, top[l]);
  return out;
}

// A softmax of n numbers in place; the sum in float64.
template <typename T>
inline void softmax(T* row, int64_t n) {
  const T inv = T(1.0 / exp_shifted(row, n, largest(row, n)));
  for (int64_t c = 0; c < n; ++c) row[c] *= inv;
}

// out[r] = Σ_c a_r[c] m[c] for R rows a_r = a + r·lda against one row m: R sums side by side, each
// in the lanes of one vector (independent chains), the lanes added in float64 at the end.
template <typename T, int R>
inline void dots(const T* a, int64_t lda, const T* m, int64_t n, double (&out)[R]) {
  Vec<T> acc[R] = {};
  int64_t c = 0;
  for (; c + VW<T> <= n; c += VW<T>) {
    const Vec<T> mv = load(m + c);
    for (int r = 0; r < R; ++r) acc[r] += load(a + r * lda + c) * mv;
  }
  for (int r = 0; r < R; ++r) {
    double sum = 0.0;
    for (int64_t k = c; k < n; ++k) sum += double(a[r * lda + k]) * double(m[k]);
    for (int64_t l = 0; l < VW<T>; ++l) sum += acc[r][l];
    out[r] = sum;
  }
}

// out[b·ldo] = Σ_c a[b, c] m[c] for every row b < B of a (row stride lda), in blocks of 8 rows.
template <typename T>
inline void dot_rows(const T* a, int64_t lda, int64_t B, const T* m, int64_t n, T* out, int64_t ldo) {
  for_row_blocks<8>(B, [&]<int R>(int64_t b) {
    double sums[R];
    dots<T, R>(a + b * lda, lda, m, n, sums);
    for (int r = 0; r < R; ++r) out[(b + r) * ldo] = T(sums[r]);
  });
}

// ---------------------------------------------------------------------------------------------
// Forward.

struct MaskShape {
  int64_t N, B, P, C, D;
};

// Kᵀ of every cell in NR-column panels, zero-padded: kt[(n, j, d, l)] = K[n, j NR + l, d]. The
// logits' tile then reads row d of a panel as NR consecutive numbers.
template <typename T>
void pack_keys_task(const T* K, T* kt, const MaskShape& s, int64_t n, int64_t panel) {
  const int64_t c0 = panel * NR, width = std::min<int64_t>(NR, s.C - c0);
  T* out = kt + (n * blocks(s.C, NR) + panel) * s.D * NR;
  transpose(K + (n * s.C + c0) * s.D, s.D, out, NR, width, s.D);
  for (int64_t d = 0; d < s.D; ++d) std::fill(out + d * NR + width, out + (d + 1) * NR, T(0));
}

// Rows p0..p1 of cell n's mask: M = softmax(Q Kᵀ) and L[b, p] = Σ_c t[b, c] M[p, c].
template <typename T>
void mask_rows_task(const T* Q, const T* kt, const T* t, T* M, T* L, const MaskShape& s, int64_t n,
                    int64_t p0, int64_t p1) {
  const int64_t panels = blocks(s.C, NR);
  T* mask = M + n * s.P * s.C;
  for (int64_t j = 0; j < panels; ++j) {
    const T* b = kt + (n * panels + j) * s.D * NR;
    const int64_t width = std::min<int64_t>(NR, s.C - j * NR);
    for_row_blocks<TR>(p0, p1, [&]<int R>(int64_t p) {
      T acc[R][NR] = {};
      tile<T, R>(Q + (n * s.P + p) * s.D, s.D, 1, b, NR, s.D, acc);
      for (int r = 0; r < R; ++r) std::memcpy(mask + (p + r) * s.C + j * NR, acc[r], width * sizeof(T));
    });
  }
  for (int64_t p = p0; p < p1; ++p) {
    T* row = mask + p * s.C;
    softmax(row, s.C);
    dot_rows(t + n * s.B * s.C, s.C, s.B, row, s.C, L + n * s.B * s.P + p, s.P);
  }
}

// The head's softmax over prompts for every row of cell n: π, the weights A = π ∘ s that α needs,
// and offset = π · e.
template <typename T>
void prompt_weights_task(const T* L, const T* scale, const T* shift, const T* ebias, T* pi, T* A,
                         T* offset, const MaskShape& s, int64_t n) {
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t row = (n * s.B + b) * s.P;
    T* w = pi + row;
    for (int64_t p = 0; p < s.P; ++p) w[p] = scale[n * s.P + p] * L[row + p] + shift[n * s.P + p];
    softmax(w, s.P);
    double off = 0.0;
    for (int64_t p = 0; p < s.P; ++p) {
      A[row + p] = w[p] * scale[n * s.P + p];
      off += double(w[p]) * ebias[n * s.P + p];
    }
    offset[n * s.B + b] = T(off);
  }
}

// out[b, c] = Σ_p W[b, p] M[p, c] for one panel of NR columns of cell n (α from A, and in the
// backward dt from dL): a product with B rows of W broadcast and M's panel in the lanes.
template <typename T>
void mix_columns_task(const T* W, const T* M, T* out, const MaskShape& s, int64_t n, int64_t panel) {
  product_panel(W + n * s.B * s.P, s.P, 1, M + n * s.P * s.C, s.C, s.P, s.C, panel * NR, out + n * s.B * s.C, s.C,
                0, s.B);
}

// ---------------------------------------------------------------------------------------------
// Backward. Given dα (B, C) and d offset (B):
//   dA = dα Mᵀ;  dπ = dA ∘ s + d offset e;  dg = π ∘ (dπ − π·dπ);  dL = dg ∘ s
//   ds = Σ_b (dg ∘ L + dA ∘ π);  d shift = Σ_b dg;  de = Σ_b d offset π
//   dt = dL M;  dM = dLᵀ t + Aᵀ dα;  dS = M ∘ (dM − rowsum(dM ∘ M));  dQ = dS K;  dK = dSᵀ Q

// dA[b, p] = Σ_c dα[b, c] M[p, c] for rows p0..p1 of cell n.
template <typename T>
void weights_grad_task(const T* g_alpha, const T* M, T* g_A, const MaskShape& s, int64_t n, int64_t p0,
                       int64_t p1) {
  for (int64_t p = p0; p < p1; ++p)
    dot_rows(g_alpha + n * s.B * s.C, s.C, s.B, M + (n * s.P + p) * s.C, s.C, g_A + n * s.B * s.P + p, s.P);
}

// The prompt softmax's backward for cell n: dL (B, P) from dA and d offset, and the gradients of
// s, shift and e (sums over the rows b).
template <typename T>
void prompt_weights_grad_task(const T* L, const T* pi, const T* scale, const T* ebias, const T* g_A,
                              const T* g_offset, T* g_L, T* g_scale, T* g_shift, T* g_ebias, const MaskShape& s,
                              int64_t n) {
  std::vector<double> gs(s.P, 0.0), gsh(s.P, 0.0), ge(s.P, 0.0);
  std::vector<T> g_pi(s.P);
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t row = (n * s.B + b) * s.P;
    const T go = g_offset[n * s.B + b];
    double inner = 0.0;
    for (int64_t p = 0; p < s.P; ++p) {
      g_pi[p] = g_A[row + p] * scale[n * s.P + p] + go * ebias[n * s.P + p];
      inner += double(pi[row + p]) * g_pi[p];
    }
    for (int64_t p = 0; p < s.P; ++p) {
      const T g_logit = pi[row + p] * (g_pi[p] - T(inner));
      g_L[row + p] = g_logit * scale[n * s.P + p];
      gs[p] += double(g_logit) * L[row + p] + double(g_A[row + p]) * pi[row + p];
      gsh[p] += g_logit;
      ge[p] += double(go) * pi[row + p];
    }
  }
  for (int64_t p = 0; p < s.P; ++p) {
    g_scale[n * s.P + p] = T(gs[p]);
    g_shift[n * s.P + p] = T(gsh[p]);
    g_ebias[n * s.P + p] = T(ge[p]);
  }
}

// Rows p0..p1 of cell n: dS (the logits' gradient, written to g_S) and then dQ = dS K for them.
// The mask's gradient dM = dLᵀ t + Aᵀ dα is one product with 2B terms per number: with the
// caller's stacked rows left = [dL; A] (2B, P) and right = [t; dα] (2B, C) of each cell,
// dM = leftᵀ right. It is written to g_S and turned into dS there, row by row.
template <typename T>
void logits_grad_rows_task(const T* M, const T* left, const T* right, const T* K, T* g_S, T* g_Q,
                           const MaskShape& s, int64_t n, int64_t p0, int64_t p1) {
  T* gs = g_S + n * s.P * s.C;
  product_rows(left + n * 2 * s.B * s.P, 1, s.P, right + n * 2 * s.B * s.C, s.C, 2 * s.B, s.C, gs, s.C, p0, p1);
  for (int64_t p = p0; p < p1; ++p) {
    const T* m = M + (n * s.P + p) * s.C;
    T* row = gs + p * s.C;
    double inner[1];
    dots<T, 1>(row, 0, m, s.C, inner);
    const T centre = T(inner[0]);
    for (int64_t c = 0; c < s.C; ++c) row[c] = m[c] * (row[c] - centre);
  }
  product_rows(gs, s.C, 1, K + n * s.C * s.D, s.D, s.C, s.D, g_Q + n * s.P * s.D, s.D, p0, p1);
}

// dK[c, :] = Σ_p dS[p, c] Q[p, :] for rows c0..c1 of cell n.
template <typename T>
void keys_grad_task(const T* g_S, const T* Q, T* g_K, const MaskShape& s, int64_t n, int64_t c0, int64_t c1) {
  product_rows(g_S + n * s.P * s.C, 1, s.C, Q + n * s.P * s.D, s.D, s.P, s.D, g_K + n * s.C * s.D, s.D, c0, c1);
}

// Scratch space that outlives the call, one buffer per thread and Slot, grown when a call needs
// more and never zeroed (every phase writes all of what it reads back). Why not a fresh vector per
// call: glibc hands out allocations of megabytes as new mappings (its default mmap threshold), so
// every page of them faulted in again at every call, which made the forward several times slower.
template <typename T, int Slot>
T* scratch(size_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// ---------------------------------------------------------------------------------------------
// The whole forward and backward, phase after phase. `over(cells, groups, task)` is the binding's
// thread pool: it runs task(n, g) for every cell n < cells and group g < groups, in any order and
// on any thread, and returns when all are done. Scratch space is the calling thread's (`scratch`);
// what the backward needs from the forward (M, L, π) is the caller's.

template <typename T, typename Over>
void mask_forward(const T* Q, const T* K, const T* t, const T* scale, const T* shift, const T* ebias, T* alpha,
                  T* offset, T* M, T* L, T* pi, const MaskShape& s, Over&& over) {
  const int64_t panels = blocks(s.C, NR), row_blocks = blocks(s.P, TR);
  T* kt = scratch<T, 0>(s.N * panels * s.D * NR);
  T* A = scratch<T, 1>(s.N * s.B * s.P);
  over(s.N, panels, [&](int64_t n, int64_t j) { pack_keys_task(K, kt, s, n, j); });
  over(s.N, row_blocks, [&](int64_t n, int64_t g) {
    mask_rows_task(Q, kt, t, M, L, s, n, g * TR, std::min(s.P, (g + 1) * TR));
  });
  over(s.N, 1, [&](int64_t n, int64_t) { prompt_weights_task(L, scale, shift, ebias, pi, A, offset, s, n); });
  over(s.N, panels, [&](int64_t n, int64_t j) { mix_columns_task(A, M, alpha, s, n, j); });
}

template <typename T, typename Over>
void mask_backward(const T* Q, const T* K, const T* t, const T* scale, const T* ebias, const T* M, const T* L,
                   const T* pi, const T* g_alpha, const T* g_offset, T* g_Q, T* g_K, T* g_t, T* g_scale,
                   T* g_shift, T* g_ebias, const MaskShape& s, Over&& over) {
  const int64_t panels = blocks(s.C, NR), row_blocks = blocks(s.P, TR), key_blocks = blocks(s.C, 4 * TR);
  const int64_t BP = s.B * s.P, BC = s.B * s.C;
  T* g_A = scratch<T, 2>(s.N * BP);
  T* g_L = scratch<T, 3>(s.N * BP);
  T* left = scratch<T, 4>(2 * s.N * BP);
  T* right = scratch<T, 5>(2 * s.N * BC);
  T* g_S = scratch<T, 6>(s.N * s.P * s.C);
  over(s.N, row_blocks, [&](int64_t n, int64_t g) {
    weights_grad_task(g_alpha, M, g_A, s, n, g * TR, std::min(s.P, (g + 1) * TR));
  });
  over(s.N, 1, [&](int64_t n, int64_t) {
    prompt_weights_grad_task(L, pi, scale, ebias, g_A, g_offset, g_L, g_scale, g_shift, g_ebias, s, n);
    // dM's two factors, stacked per cell: [dL; A] (2B, P) with A = π ∘ s, and [t; dα] (2B, C)
    std::copy_n(g_L + n * BP, BP, left + 2 * n * BP);
    for (int64_t i = 0; i < BP; ++i) left[(2 * n + 1) * BP + i] = pi[n * BP + i] * scale[n * s.P + i % s.P];
    std::copy_n(t + n * BC, BC, right + 2 * n * BC);
    std::copy_n(g_alpha + n * BC, BC, right + (2 * n + 1) * BC);
  });
  over(s.N, panels, [&](int64_t n, int64_t j) { mix_columns_task(g_L, M, g_t, s, n, j); });
  over(s.N, row_blocks, [&](int64_t n, int64_t g) {
    logits_grad_rows_task(M, left, right, K, g_S, g_Q, s, n, g * TR, std::min(s.P, (g + 1) * TR));
  });
  over(s.N, key_blocks, [&](int64_t n, int64_t g) {
    keys_grad_task(g_S, Q, g_K, s, n, g * 4 * TR, std::min(s.C, (g + 1) * 4 * TR));
  });
}

// out[n] = op(a[n]) op(b[n]) for every cell n, with op a transpose where asked: a is (N, M, K), or
// (N, K, M) with trans_a; b is (N, K, J), or (N, J, K) with trans_b; out is (N, M, J). The tile reads
// a transposed A in place (through its strides) but wants B's rows as consecutive numbers, so a
// transposed B is copied into (K, J) first. The mask's queries come out of such products (a linear
// layer per cell: x Wᵀ, and in its backward dy W and dyᵀ x); torch's bmm runs them at MKL's AVX2 rate.
template <typename T, typename Over>
void cell_product(const T* a, const T* b, T* out, int64_t N, int64_t M, int64_t K, int64_t J, bool trans_a,
                  bool trans_b, Over&& over) {
  if (trans_b) {
    T* packed = scratch<T, 7>(N * K * J);
    over(N, 1, [&](int64_t n, int64_t) { transpose(b + n * J * K, K, packed + n * K * J, J, J, K); });
    b = packed;
  }
  const int64_t a_row = trans_a ? 1 : K, a_col = trans_a ? M : 1;
  over(N, blocks(M, TR), [&](int64_t n, int64_t g) {
    product_rows(a + n * M * K, a_row, a_col, b + n * K * J, J, K, J, out + n * M * J, J, g * TR,
                 std::min(M, (g + 1) * TR));
  });
}

}  // namespace fused_mask
