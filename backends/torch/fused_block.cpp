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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("stats_forward", &stats_forward);
  m.def("block_backward", &block_backward);
  m.def("pool_forward", &pool_forward);
  m.def("pool_grad_q", &pool_grad_q);
  m.attr("LANES") = LANES;
}
