// The torch binding of the fused embedding-block kernels (backends/fused_block.h): tensors in,
// tensors out, the tasks run on torch's thread pool. The maths, the notation and the split into two
// autograd Functions are in fused.py. Built at first use by torch.utils.cpp_extension (fused.py).
//
// Threads: at::parallel_for runs the tasks on torch's own OpenMP pool (the libgomp torch loaded),
// so the kernels and torch's ops never compete with a second pool for the cores.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

#include "fused_block.h"
#include "fused_mask.h"

namespace {

using namespace fused_block;

// ---------------------------------------------------------------------------------------------
// Entry points: tensors in, tensors out. Every input is made contiguous; x, W, Bias, u, μ, q and the
// incoming gradients share W's dtype (the caller casts).

struct Shape {
  int64_t N, B, C, D, groups;
};

Shape shape_of(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 3 && x.size(1) == w.size(2),
              "fused block: x (B, C) and W (N, D, C) expected");
  const int64_t C = w.size(2);
  return {w.size(0), x.size(0), C, w.size(1), column_groups(C)};
}

template <typename Task>
void over_tasks(int64_t cells, int64_t groups, Task&& task) {
  at::parallel_for(0, cells * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) task(t / groups, t % groups);
  });
}

// over_tasks as the thread pool the mask's phases take (fused_mask.h).
struct OverTasks {
  template <typename Task>
  void operator()(int64_t cells, int64_t groups, Task&& task) const { over_tasks(cells, groups, task); }
};

std::vector<at::Tensor> stats_forward(at::Tensor x, at::Tensor w, at::Tensor bias, at::Tensor u, double eps) {
  const Shape s = shape_of(x, w);
  x = x.contiguous(), w = w.contiguous(), bias = bias.contiguous(), u = u.contiguous();
  auto mean = at::empty({s.N, s.B, s.C}, w.options());
  auto rstd = at::empty_like(mean), t_raw = at::empty_like(mean);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "stats_forward", [&] {
    over_tasks(s.N, s.groups, [&](int64_t n, int64_t g) {
      stats_forward_task<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                   bias.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                   mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(),
                                   t_raw.data_ptr<scalar_t>(), n, g * LANES, s.B, s.C, s.D, eps);
    });
  });
  return {mean, rstd, t_raw};
}

std::vector<at::Tensor> block_backward(at::Tensor x, at::Tensor w, at::Tensor bias, at::Tensor u,
                                       at::Tensor mean, at::Tensor rstd, at::Tensor g_mean, at::Tensor g_rstd,
                                       at::Tensor g_traw, at::Tensor q, at::Tensor g_z, bool want_gx) {
  const Shape s = shape_of(x, w);
  x = x.contiguous(), w = w.contiguous(), bias = bias.contiguous(), u = u.contiguous();
  mean = mean.contiguous(), rstd = rstd.contiguous(), q = q.contiguous(), g_z = g_z.contiguous();
  g_mean = g_mean.contiguous(), g_rstd = g_rstd.contiguous(), g_traw = g_traw.contiguous();
  auto g_w = at::empty_like(w), g_bias = at::empty_like(bias);
  auto f64 = w.options().dtype(at::kDouble);
  auto g_u_part = at::empty({s.N, s.groups, s.D}, f64);
  auto g_x_part = want_gx ? at::empty({s.N, s.B, s.C}, f64) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "block_backward", [&] {
    over_tasks(s.N, s.groups, [&](int64_t n, int64_t g) {
      auto task = want_gx ? block_backward_task<scalar_t, true> : block_backward_task<scalar_t, false>;
      task(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
           mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), g_mean.data_ptr<scalar_t>(),
           g_rstd.data_ptr<scalar_t>(), g_traw.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
           g_z.data_ptr<scalar_t>(), g_w.data_ptr<scalar_t>(), g_bias.data_ptr<scalar_t>(),
           g_u_part.data_ptr<double>(), want_gx ? g_x_part.data_ptr<double>() : nullptr, n, g, s.B, s.C, s.D);
    });
  });
  auto g_x = want_gx ? g_x_part.sum(0).to(w.scalar_type()) : at::empty({0}, w.options());
  return {g_x, g_w, g_bias, g_u_part.sum(1).to(w.scalar_type())};
}

at::Tensor pool_forward(at::Tensor x, at::Tensor w, at::Tensor bias, at::Tensor mean, at::Tensor q) {
  const Shape s = shape_of(x, w);
  x = x.contiguous(), w = w.contiguous(), bias = bias.contiguous();
  mean = mean.contiguous(), q = q.contiguous();
  auto z = at::empty({s.N, s.B, s.D}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "pool_forward", [&] {
    over_tasks(s.N, channel_groups(s.D), [&](int64_t n, int64_t g) {
      pool_forward_task<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                  mean.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                                  n, g, s.B, s.C, s.D);
    });
  });
  return z;
}

at::Tensor pool_grad_q(at::Tensor x, at::Tensor w, at::Tensor bias, at::Tensor mean, at::Tensor g_z) {
  const Shape s = shape_of(x, w);
  x = x.contiguous(), w = w.contiguous(), bias = bias.contiguous(), mean = mean.contiguous();
  g_z = g_z.contiguous();
  auto g_q = at::empty({s.N, s.B, s.C}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "pool_grad_q", [&] {
    over_tasks(s.N, s.groups, [&](int64_t n, int64_t g) {
      pool_grad_q_task<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                                 mean.data_ptr<scalar_t>(), g_z.data_ptr<scalar_t>(),
                                 g_q.data_ptr<scalar_t>(), n, g, s.B, s.C, s.D);
    });
  });
  return g_q;
}


// ---------------------------------------------------------------------------------------------
// The mask and the prompt pooling (backends/fused_mask.h): Q (N, P, D), K (N, C, D), t (N, B, C) and
// the per-prompt scale, shift and expansion bias (N, P), all in Q's dtype; the phases run on torch's
// pool through OverTasks.

fused_mask::MaskShape mask_shape(const at::Tensor& q, const at::Tensor& k, const at::Tensor& t) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && t.dim() == 3 && k.size(0) == q.size(0) && k.size(2) == q.size(2) &&
                  t.size(0) == q.size(0) && t.size(2) == k.size(1),
              "fused mask: Q (N, P, D), K (N, C, D) and t (N, B, C) expected");
  return {q.size(0), t.size(1), q.size(1), k.size(1), q.size(2)};
}

// (α (N, B, C), offset (N, B, 1)) and, for the backward, M (N, P, C), L and π (N, B, P).
std::vector<at::Tensor> mask_forward(at::Tensor q, at::Tensor k, at::Tensor t, at::Tensor scale, at::Tensor shift,
                                     at::Tensor ebias) {
  const fused_mask::MaskShape s = mask_shape(q, k, t);
  q = q.contiguous(), k = k.contiguous(), t = t.contiguous();
  scale = scale.contiguous(), shift = shift.contiguous(), ebias = ebias.contiguous();
  auto mask = at::empty({s.N, s.P, s.C}, q.options()), logits = at::empty({s.N, s.B, s.P}, q.options());
  auto pi = at::empty_like(logits), alpha = at::empty({s.N, s.B, s.C}, q.options());
  auto offset = at::empty({s.N, s.B, 1}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mask_forward", [&] {
    fused_mask::mask_forward(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
                             scale.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), ebias.data_ptr<scalar_t>(),
                             alpha.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
                             logits.data_ptr<scalar_t>(), pi.data_ptr<scalar_t>(), s, OverTasks{});
  });
  return {alpha, offset, mask, logits, pi};
}

// The gradients of Q, K, t, scale, shift and the expansion bias.
std::vector<at::Tensor> mask_backward(at::Tensor q, at::Tensor k, at::Tensor t, at::Tensor scale, at::Tensor ebias,
                                      at::Tensor mask, at::Tensor logits, at::Tensor pi, at::Tensor g_alpha,
                                      at::Tensor g_offset) {
  const fused_mask::MaskShape s = mask_shape(q, k, t);
  q = q.contiguous(), k = k.contiguous(), t = t.contiguous(), scale = scale.contiguous();
  ebias = ebias.contiguous(), mask = mask.contiguous(), logits = logits.contiguous(), pi = pi.contiguous();
  g_alpha = g_alpha.contiguous(), g_offset = g_offset.contiguous();
  auto g_q = at::empty_like(q), g_k = at::empty_like(k), g_t = at::empty_like(t);
  auto g_scale = at::empty_like(scale), g_shift = at::empty_like(scale), g_ebias = at::empty_like(scale);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mask_backward", [&] {
    fused_mask::mask_backward(
        q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
        ebias.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), logits.data_ptr<scalar_t>(), pi.data_ptr<scalar_t>(),
        g_alpha.data_ptr<scalar_t>(), g_offset.data_ptr<scalar_t>(), g_q.data_ptr<scalar_t>(),
        g_k.data_ptr<scalar_t>(), g_t.data_ptr<scalar_t>(), g_scale.data_ptr<scalar_t>(),
        g_shift.data_ptr<scalar_t>(), g_ebias.data_ptr<scalar_t>(), s, OverTasks{});
  });
  return {g_q, g_k, g_t, g_scale, g_shift, g_ebias};
}

// op(a) @ op(b) per cell (fused_mask::cell_product): a (N, M, K) or, transposed, (N, K, M); b (N, K, J)
// or (N, J, K).
at::Tensor cell_matmul(at::Tensor a, at::Tensor b, bool trans_a, bool trans_b) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.scalar_type() == b.scalar_type(),
              "cell matmul: a and b (N, ., .) of one dtype expected");
  const int64_t N = a.size(0), M = a.size(trans_a ? 2 : 1), K = a.size(trans_a ? 1 : 2);
  const int64_t J = b.size(trans_b ? 1 : 2);
  TORCH_CHECK(b.size(trans_b ? 2 : 1) == K, "cell matmul: inner sizes differ");
  a = a.contiguous(), b = b.contiguous();
  auto out = at::empty({N, M, J}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "cell_matmul", [&] {
    fused_mask::cell_product(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, M, K, J,
                             trans_a, trans_b, OverTasks{});
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("stats_forward", &stats_forward);
  m.def("block_backward", &block_backward);
  m.def("pool_forward", &pool_forward);
  m.def("pool_grad_q", &pool_grad_q);
  m.def("mask_forward", &mask_forward);
  m.def("mask_backward", &mask_backward);
  m.def("cell_matmul", &cell_matmul);
  m.attr("LANES") = LANES;
}
