// r5's embedding block as fused CPU kernels, framework-free: H = relu(x W + Bias) is recomputed in
// registers and never stored. The four loops (stats forward, pool forward, the block backward,
// pool's g_q) are task functions over one cell and one group of columns (the pool forward: of
// channels); each framework's binding runs the tasks on its own thread pool and owns the arrays:
// backends/torch/fused_block.cpp (at::parallel_for) and backends/jax/fused_block_ffi.cpp (an XLA FFI
// handler on XLA's intra-op pool). The maths and the notation are in backends/torch/fused.py.
//
// Layout. The kernels take W and Bias stored (N, D, C), channels-major, which lets every kernel
// read them in place; x is (B, C) and the per-row values (μ, r, t_raw, q, ...) are (N, B, C).
//
// Register blocking. Three kernels (stats forward, block backward, pool's g_q) sum over the
// channels d, so they put LANES columns c side by side in the vector lanes and loop over d: every
// sum over d is then a per-lane (vertical) add, never a horizontal one, and the order of every sum
// is the loop order. Row d of a task's W and Bias is LANES consecutive numbers of the (N, D, C)
// arrays; RB rows of the batch share each of these loads, and their accumulators (fixed-size arrays
// the compiler keeps in registers) live across the whole loop over d. The block backward keeps
// more values per row and lane, so it runs each task as two halves of BW columns with BRB rows. The
// pool forward sums over
// columns instead, so it runs along the rows of W and Bias (VL columns in the lanes) for PD
// channels and PR batch rows at a time, and adds each lane's sum once, at the end.
//
// Tasks. A task owns one cell n and one group of columns (the pool forward: of channels) and loops
// over the rows itself, so the gradients of W and Bias (sums over the rows) need no atomics; sums
// across tasks (g_u over columns, g_x over cells) go to float64 partial buffers that the caller adds.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace fused_block {

constexpr int LANES = 32;  // columns per task: two AVX-512 vectors of float32, four AVX2 ones
constexpr int RB = 2;      // rows of the batch sharing each load of W and Bias in the stats forward and
                           // pool's g_q (2 and 32 columns: fastest of 8-32 columns × 2-8 rows on a
                           // 2-core AMD EPYC with AVX-512)
constexpr int BW = 16;     // block backward: columns per half-task (one AVX-512 vector of float32)
constexpr int BRB = 4;     // block backward: rows per block
constexpr int VL = 16;     // pool forward: columns in the lanes (one AVX-512 vector of float32)
constexpr int PD = 4;      // pool forward: channels per block
constexpr int PR = 1;      // pool forward: rows per block (PR × PD accumulators of VL lanes; 4 × 1 was
                           // the fastest of 2-16 channels × 1-2 rows on a 2-core AMD EPYC with AVX-512)

template <typename T>
inline T relu(T v) { return v > T(0) ? v : T(0); }

// Tasks per cell: groups of LANES columns (stats forward, block backward, pool's g_q) and groups of
// PD channels (pool forward).
inline int64_t column_groups(int64_t C) { return (C + LANES - 1) / LANES; }
inline int64_t channel_groups(int64_t D) { return (D + PD - 1) / PD; }

// W, Bias and x of the columns c0..c0+LANES of cell n. Every group of columns but a last, partial
// one is read in place: row d of its W is LANES consecutive numbers, stride C apart. The partial
// group copies its columns into zero-padded (D, LANES) buffers, so that every loop runs over full
// LANES: columns past C then have H = 0 and every gradient read back for them is 0 (the callers pad
// g_* with zeros too). x (B, C) has the same row stride as W and Bias in both cases.
template <typename T, int W = LANES>
struct Columns {
  const T *w, *bias, *x;
  int64_t stride;
  std::vector<T> padded;

  Columns(const T* Wt, const T* Bias, const T* X, int64_t n, int64_t c0, int64_t B, int64_t C, int64_t D) {
    const T* wn = Wt + n * D * C;
    const T* bn = Bias + n * D * C;
    const int64_t width = std::min<int64_t>(W, C - c0);
    if (width == W) {
      w = wn + c0, bias = bn + c0, x = X + c0, stride = C;
      return;
    }
    padded.assign((2 * D + B) * W, T(0));
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < width; ++j) {
        padded[d * W + j] = wn[d * C + c0 + j];
        padded[(D + d) * W + j] = bn[d * C + c0 + j];
      }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < width; ++j) padded[(2 * D + b) * W + j] = X[b * C + c0 + j];
    w = padded.data(), bias = w + D * W, x = bias + D * W, stride = W;
  }
  const T* w_row(int64_t d) const { return w + d * stride; }
  const T* bias_row(int64_t d) const { return bias + d * stride; }
  template <int R>
  void load_x(T (&out)[R][W], int64_t b0) const {
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < W; ++l) out[r][l] = x[(b0 + r) * stride + l];
  }
};

// (N, B, C) values of rows b0..b0+R of one task, zero past C.
template <typename T, int R, int W>
inline void load_rows(T (&out)[R][W], const T* a, int64_t n, int64_t b0, int64_t c0, int64_t B,
                      int64_t C) {
  const int64_t width = std::min<int64_t>(W, C - c0);
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < W; ++l) out[r][l] = l < width ? a[(n * B + b0 + r) * C + c0 + l] : T(0);
}

template <typename T, int R, int W, typename Out>
inline void store_rows(const T (&in)[R][W], Out* a, int64_t n, int64_t b0, int64_t c0, int64_t B,
                       int64_t C) {
  const int64_t width = std::min<int64_t>(W, C - c0);
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < width; ++l) a[(n * B + b0 + r) * C + c0 + l] = in[r][l];
}

// Runs body.template operator()<R>(b0) over the rows begin..end in blocks of BLOCK, then one row at
// a time (fused_mask.h's products tile their rows the same way).
template <int BLOCK, typename Body>
inline void for_row_blocks(int64_t begin, int64_t end, Body&& body) {
  int64_t b0 = begin;
  for (; b0 + BLOCK <= end; b0 += BLOCK) body.template operator()<BLOCK>(b0);
  for (; b0 < end; ++b0) body.template operator()<1>(b0);
}

template <int BLOCK, typename Body>
inline void for_row_blocks(int64_t B, Body&& body) { for_row_blocks<BLOCK>(0, B, body); }

// ---------------------------------------------------------------------------------------------
// EmbedStats forward: μ, r, t_raw per (n, b, c). Two passes over d (the two-pass variance); H is
// recomputed in the second.

template <typename T>
void stats_forward_task(const T* X, const T* W, const T* Bias, const T* U, T* mean, T* rstd, T* t_raw,
                        int64_t n, int64_t c0, int64_t B, int64_t C, int64_t D, double eps) {
  const Columns<T> cols(W, Bias, X, n, c0, B, C, D);
  const T inv_d = T(1.0 / D);
  const T* u = U + n * D;
  for_row_blocks<RB>(B, [&]<int R>(int64_t b0) {
    T x[R][LANES], mu[R][LANES] = {}, sq[R][LANES] = {}, su[R][LANES] = {};
    cols.load_x(x, b0);
    for (int64_t d = 0; d < D; ++d) {
      const T* wd = cols.w_row(d);
      const T* bd = cols.bias_row(d);
      for (int r = 0; r < R; ++r)
        for (int l = 0; l < LANES; ++l) mu[r][l] += relu(x[r][l] * wd[l] + bd[l]);
    }
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < LANES; ++l) mu[r][l] *= inv_d;
    for (int64_t d = 0; d < D; ++d) {
      const T* wd = cols.w_row(d);
      const T* bd = cols.bias_row(d);
      const T ud = u[d];
      for (int r = 0; r < R; ++r)
        for (int l = 0; l < LANES; ++l) {
          const T dev = relu(x[r][l] * wd[l] + bd[l]) - mu[r][l];
          sq[r][l] += dev * dev;
          su[r][l] += dev * ud;
        }
    }
    T rs[R][LANES];
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < LANES; ++l) rs[r][l] = T(1) / std::sqrt(sq[r][l] * inv_d + T(eps));
    store_rows<T, R>(mu, mean, n, b0, c0, B, C);
    store_rows<T, R>(rs, rstd, n, b0, c0, B, C);
    store_rows<T, R>(su, t_raw, n, b0, c0, B, C);
  });
}

// The block's backward: everything that flows into H. With dev_d = H_d − μ, the gradient
// reaching H_d from the stats is a + g_t u_d + k dev_d (a = g_μ/D − g_t ū, k = −g_r r³/D) and from
// the pool q g_ẑ,d (derivations: fused.py), so
//   g_pre = a + g_t u_d + k dev_d + q g_ẑ,d where pre > 0 (else 0),
// g_W = Σ_b x g_pre, g_Bias = Σ_b g_pre, g_u_d = Σ_{b,c} g_t dev_d, g_x = Σ_d W g_pre (this
// cell's share). One pass gives W and Bias their whole gradient, written (N, D, C) like W.

// One half of a task's columns, c0..c0+BW, with BRB rows per block (BW, BRB above); g_u's sums over
// the rows and these columns are added to gu_out (D numbers).
template <typename T, bool WANT_GX>
void block_backward_columns(const T* X, const T* W, const T* Bias, const T* U, const T* mean, const T* rstd,
                            const T* g_mean, const T* g_rstd, const T* g_traw, const T* q, const T* g_z, T* g_w,
                            T* g_bias, double* gu_out, double* g_x_part, int64_t n, int64_t c0, int64_t B,
                            int64_t C, int64_t D) {
  const int64_t width = std::min<int64_t>(BW, C - c0);
  const Columns<T, BW> cols(W, Bias, X, n, c0, B, C, D);
  const T inv_d = T(1.0 / D);
  const T* u = U + n * D;
  T u_bar = T(0);
  for (int64_t d = 0; d < D; ++d) u_bar += u[d];
  u_bar *= inv_d;
  std::vector<T> gw(D * BW, T(0)), gb(D * BW, T(0)), gu(D * BW, T(0));
  for_row_blocks<BRB>(B, [&]<int R>(int64_t b0) {
    T x[R][BW], mu[R][BW], gt[R][BW], a[R][BW], k[R][BW], qs[R][BW], gx[R][BW] = {};
    T gm[R][BW], gr[R][BW], rs[R][BW];
    cols.load_x(x, b0);
    load_rows<T, R>(mu, mean, n, b0, c0, B, C);
    load_rows<T, R>(qs, q, n, b0, c0, B, C);
    load_rows<T, R>(gt, g_traw, n, b0, c0, B, C);
    load_rows<T, R>(gm, g_mean, n, b0, c0, B, C);
    load_rows<T, R>(gr, g_rstd, n, b0, c0, B, C);
    load_rows<T, R>(rs, rstd, n, b0, c0, B, C);
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < BW; ++l) {
        a[r][l] = gm[r][l] * inv_d - gt[r][l] * u_bar;
        k[r][l] = -gr[r][l] * rs[r][l] * rs[r][l] * rs[r][l] * inv_d;
      }
    for (int64_t d = 0; d < D; ++d) {
      const T* wd = cols.w_row(d);
      const T* bd = cols.bias_row(d);
      const T ud = u[d];
      T gw_d[BW] = {}, gb_d[BW] = {}, gu_d[BW] = {};
      for (int r = 0; r < R; ++r) {
        const T gz = g_z[(n * B + b0 + r) * D + d];
        for (int l = 0; l < BW; ++l) {
          const T pre = x[r][l] * wd[l] + bd[l];
          const T dev = relu(pre) - mu[r][l];
          const T g_pre = pre > T(0) ? a[r][l] + gt[r][l] * ud + k[r][l] * dev + qs[r][l] * gz : T(0);
          gw_d[l] += x[r][l] * g_pre;
          gb_d[l] += g_pre;
          gu_d[l] += gt[r][l] * dev;
          if constexpr (WANT_GX) gx[r][l] += wd[l] * g_pre;
        }
      }
      for (int l = 0; l < BW; ++l) {
        gw[d * BW + l] += gw_d[l];
        gb[d * BW + l] += gb_d[l];
        gu[d * BW + l] += gu_d[l];
      }
    }
    if constexpr (WANT_GX) store_rows<T, R>(gx, g_x_part, n, b0, c0, B, C);
  });
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = 0; j < width; ++j) {
      g_w[(n * D + d) * C + c0 + j] = gw[d * BW + j];
      g_bias[(n * D + d) * C + c0 + j] = gb[d * BW + j];
    }
  for (int64_t d = 0; d < D; ++d) {
    double sum = 0.0;
    for (int l = 0; l < BW; ++l) sum += gu[d * BW + l];
    gu_out[d] += sum;
  }
}

// The task: its LANES columns in halves of BW, a width at which the backward's many per-row values
// fit in registers with BRB rows (faster than the other kernels' LANES × RB on a 2-core AMD EPYC
// with AVX-512). g_u's partial sum of the task goes to g_u_part[(n, group)] in float64.
template <typename T, bool WANT_GX>
void block_backward_task(const T* X, const T* W, const T* Bias, const T* U, const T* mean, const T* rstd,
                         const T* g_mean, const T* g_rstd, const T* g_traw, const T* q, const T* g_z, T* g_w,
                         T* g_bias, double* g_u_part, double* g_x_part, int64_t n, int64_t group, int64_t B,
                         int64_t C, int64_t D) {
  double* gu = g_u_part + (n * column_groups(C) + group) * D;
  std::fill(gu, gu + D, 0.0);
  for (int64_t c0 = group * LANES; c0 < std::min<int64_t>(C, (group + 1) * LANES); c0 += BW)
    block_backward_columns<T, WANT_GX>(X, W, Bias, U, mean, rstd, g_mean, g_rstd, g_traw, q, g_z, g_w, g_bias,
                                       gu, g_x_part, n, c0, B, C, D);
}

// ---------------------------------------------------------------------------------------------
// EmbedPool forward: ẑ[b, d] = Σ_c q[b,c] (H[b,c,d] − μ[b,c]). For fixed (n, d) this runs along a
// row of W and Bias, so a task owns one cell and PD channels and sums over every column itself:
// VL columns in the lanes, each lane's sum in column order, the lanes added at the end in float64.

template <typename T, int R, int P>
inline void pool_forward_block(const T* X, const T* W, const T* Bias, const T* mean, const T* q, T* z,
                               int64_t n, int64_t d0, int64_t b0, int64_t B, int64_t C, int64_t D) {
  const T *w[P], *bs[P], *xs[R], *qs[R], *ms[R];
  for (int i = 0; i < P; ++i) w[i] = W + (n * D + d0 + i) * C, bs[i] = Bias + (n * D + d0 + i) * C;
  for (int r = 0; r < R; ++r) {
    xs[r] = X + (b0 + r) * C;
    qs[r] = q + (n * B + b0 + r) * C;
    ms[r] = mean + (n * B + b0 + r) * C;
  }
  T acc[R][P][VL] = {};
  int64_t c = 0;
  for (; c + VL <= C; c += VL)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < P; ++i)
        for (int l = 0; l < VL; ++l)
          acc[r][i][l] += qs[r][c + l] * (relu(xs[r][c + l] * w[i][c + l] + bs[i][c + l]) - ms[r][c + l]);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < P; ++i)
      for (int l = 0; c + l < C; ++l)
        acc[r][i][l] += qs[r][c + l] * (relu(xs[r][c + l] * w[i][c + l] + bs[i][c + l]) - ms[r][c + l]);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < P; ++i) {
      double s = 0.0;
      for (int l = 0; l < VL; ++l) s += acc[r][i][l];
      z[(n * B + b0 + r) * D + d0 + i] = T(s);
    }
}

template <typename T>
void pool_forward_task(const T* X, const T* W, const T* Bias, const T* mean, const T* q, T* z, int64_t n,
                       int64_t group, int64_t B, int64_t C, int64_t D) {
  const int64_t d0 = group * PD;
  for_row_blocks<PR>(B, [&]<int R>(int64_t b0) {
    if (d0 + PD <= D) {
      pool_forward_block<T, R, PD>(X, W, Bias, mean, q, z, n, d0, b0, B, C, D);
    } else {
      for (int64_t d = d0; d < D; ++d) pool_forward_block<T, R, 1>(X, W, Bias, mean, q, z, n, d, b0, B, C, D);
    }
  });
}

// EmbedPool backward, the part that is not the block's: g_q_c = Σ_d (H[c,d] − μ_c) g_ẑ,d (its share
// of the gradients of W, Bias and x goes to block_backward).

template <typename T>
void pool_grad_q_task(const T* X, const T* W, const T* Bias, const T* mean, const T* g_z, T* g_q, int64_t n,
                      int64_t group, int64_t B, int64_t C, int64_t D) {
  const int64_t c0 = group * LANES;
  const Columns<T> cols(W, Bias, X, n, c0, B, C, D);
  for_row_blocks<RB>(B, [&]<int R>(int64_t b0) {
    T x[R][LANES], mu[R][LANES], gq[R][LANES] = {};
    cols.load_x(x, b0);
    load_rows<T, R>(mu, mean, n, b0, c0, B, C);
    for (int64_t d = 0; d < D; ++d) {
      const T* wd = cols.w_row(d);
      const T* bd = cols.bias_row(d);
      for (int r = 0; r < R; ++r) {
        const T gz = g_z[(n * B + b0 + r) * D + d];
        for (int l = 0; l < LANES; ++l) gq[r][l] += (relu(x[r][l] * wd[l] + bd[l]) - mu[r][l]) * gz;
      }
    }
    store_rows<T, R>(gq, g_q, n, b0, c0, B, C);
  });
}

}  // namespace fused_block
