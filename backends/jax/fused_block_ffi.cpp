// The XLA FFI binding of the fused embedding-block kernels (backends/fused_block.h), for JAX's
// r5-fused variant: XLA's buffers in, XLA's buffers out, the tasks run on XLA's own intra-op thread
// pool. Every call covers all N cells. Built at first use by backends/jax/fused.py.
//
// Threads: a call splits its tasks (cell, group of columns or channels) between the thread XLA runs
// it on and helpers scheduled on XLA's intra-op pool, which take tasks from one shared counter. The
// calling thread works too, so the call finishes even when no helper ever starts (a busy pool);
// helpers that start late find no task left and return at once.
//
// Shapes (T = float32 or float64, every argument the same): x (B, C), W and Bias (N, D, C),
// u (N, D); μ, r, t_raw, q and g_q (N, B, C); ẑ and g_ẑ (N, B, D). A single cell's call may leave
// out N (see shape_of).

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fused_block.h"
#include "fused_mask.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using namespace fused_block;

namespace {

template <typename Task>
void over_tasks(ffi::ThreadPool& pool, int64_t cells, int64_t groups, Task&& task) {
  const int64_t total = cells * groups;
  struct Counters {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, total, groups, &task] {
    for (int64_t i; (i = counters->next.fetch_add(1)) < total;) {
      task(i / groups, i % groups);
      counters->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(work)(work));
  work();
  while (counters->done.load(std::memory_order_acquire) < total) std::this_thread::yield();
}

struct Shape {
  int64_t N, B, C, D;
};

// x (B, C) or (1, B, C) and W (D, C) or (N, D, C), of one dtype, or nothing. One cell's call has
// the short shapes; jax.vmap over the cells (vmap_method "expand_dims") adds the leading axes.
std::optional<Shape> shape_of(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w) {
  auto xd = x.dimensions(), wd = w.dimensions();
  const bool x_ok = xd.size() == 2 || (xd.size() == 3 && xd[0] == 1);
  const bool w_ok = wd.size() == 2 || wd.size() == 3;
  if (!x_ok || !w_ok || xd.back() != wd.back() || x.element_type() != w.element_type()) return std::nullopt;
  const int64_t N = wd.size() == 3 ? wd[0] : 1;
  return Shape{N, xd[xd.size() - 2], wd.back(), wd[wd.size() - 2]};
}

template <typename T>
const T* in(const ffi::AnyBuffer& a) { return static_cast<const T*>(a.untyped_data()); }
template <typename T>
T* out(ffi::Result<ffi::AnyBuffer>& a) { return static_cast<T*>(a->untyped_data()); }

// body.template operator()<T>(shape) with T the C++ type of `type`, float or double.
template <typename Shape, typename Body>
ffi::Error with_dtype(ffi::DataType type, const Shape& shape, Body&& body, const std::string& kernels) {
  if (type == ffi::DataType::F32) return body.template operator()<float>(shape);
  if (type == ffi::DataType::F64) return body.template operator()<double>(shape);
  return ffi::Error::InvalidArgument(kernels + ": float32 or float64 buffers expected");
}

// Every handler's prologue: checks the shapes of x and W, then calls
// body.template operator()<T>(shape) with T = float or double, their dtype.
template <typename Body>
ffi::Error dispatch(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w, Body&& body) {
  const auto shape = shape_of(x, w);
  if (!shape) {
    return ffi::Error::InvalidArgument(
        "fused block: x (B, C) and W (D, C) or (N, D, C) of one dtype expected");
  }
  return with_dtype(w.element_type(), *shape, body, "fused block");
}

ffi::Error stats_forward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias,
                         ffi::AnyBuffer u, double eps, ffi::Result<ffi::AnyBuffer> mean,
                         ffi::Result<ffi::AnyBuffer> rstd, ffi::Result<ffi::AnyBuffer> t_raw) {
  return dispatch(x, w, [&]<typename T>(const Shape& s) {
    over_tasks(pool, s.N, column_groups(s.C), [&](int64_t n, int64_t g) {
      stats_forward_task<T>(in<T>(x), in<T>(w), in<T>(bias), in<T>(u), out<T>(mean), out<T>(rstd),
                            out<T>(t_raw), n, g * LANES, s.B, s.C, s.D, eps);
    });
    return ffi::Error::Success();
  });
}

ffi::Error pool_forward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias,
                        ffi::AnyBuffer mean, ffi::AnyBuffer q, ffi::Result<ffi::AnyBuffer> z) {
  return dispatch(x, w, [&]<typename T>(const Shape& s) {
    over_tasks(pool, s.N, channel_groups(s.D), [&](int64_t n, int64_t g) {
      pool_forward_task<T>(in<T>(x), in<T>(w), in<T>(bias), in<T>(mean), in<T>(q), out<T>(z), n, g, s.B,
                           s.C, s.D);
    });
    return ffi::Error::Success();
  });
}

ffi::Error pool_grad_q(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias,
                       ffi::AnyBuffer mean, ffi::AnyBuffer g_z, ffi::Result<ffi::AnyBuffer> g_q) {
  return dispatch(x, w, [&]<typename T>(const Shape& s) {
    over_tasks(pool, s.N, column_groups(s.C), [&](int64_t n, int64_t g) {
      pool_grad_q_task<T>(in<T>(x), in<T>(w), in<T>(bias), in<T>(mean), in<T>(g_z), out<T>(g_q), n, g,
                          s.B, s.C, s.D);
    });
    return ffi::Error::Success();
  });
}

// g_W, g_Bias (N, D, C) and g_u (N, D); x is data, so its gradient is not computed. g_u's per-task
// partial sums are float64 and added here, in task order.
ffi::Error block_backward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias,
                          ffi::AnyBuffer u, ffi::AnyBuffer mean, ffi::AnyBuffer rstd, ffi::AnyBuffer g_mean,
                          ffi::AnyBuffer g_rstd, ffi::AnyBuffer g_traw, ffi::AnyBuffer q, ffi::AnyBuffer g_z,
                          ffi::Result<ffi::AnyBuffer> g_w, ffi::Result<ffi::AnyBuffer> g_bias,
                          ffi::Result<ffi::AnyBuffer> g_u) {
  return dispatch(x, w, [&]<typename T>(const Shape& s) {
    const int64_t groups = column_groups(s.C);
    std::vector<double> g_u_part(s.N * groups * s.D);
    over_tasks(pool, s.N, groups, [&](int64_t n, int64_t g) {
      block_backward_task<T, false>(in<T>(x), in<T>(w), in<T>(bias), in<T>(u), in<T>(mean), in<T>(rstd),
                                    in<T>(g_mean), in<T>(g_rstd), in<T>(g_traw), in<T>(q), in<T>(g_z),
                                    out<T>(g_w), out<T>(g_bias), g_u_part.data(), nullptr, n, g, s.B, s.C,
                                    s.D);
    });
    T* g_u_out = out<T>(g_u);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t d = 0; d < s.D; ++d) {
        double sum = 0;
        for (int64_t g = 0; g < groups; ++g) sum += g_u_part[(n * groups + g) * s.D + d];
        g_u_out[n * s.D + d] = static_cast<T>(sum);
      }
    return ffi::Error::Success();
  });
}


// ---------------------------------------------------------------------------------------------
// The mask and the prompt pooling (backends/fused_mask.h). Q (N, P, D), K (N, C, D), t (N, B, C),
// the per-prompt s, shift and e (N, P); a single cell's call may leave out N on all of them.

struct OverPool {
  ffi::ThreadPool& pool;
  template <typename Task>
  void operator()(int64_t cells, int64_t groups, Task&& task) const { over_tasks(pool, cells, groups, task); }
};

std::optional<fused_mask::MaskShape> mask_shape(const ffi::AnyBuffer& q, const ffi::AnyBuffer& k,
                                                const ffi::AnyBuffer& t) {
  auto qd = q.dimensions(), kd = k.dimensions(), td = t.dimensions();
  const size_t rank = qd.size();
  if ((rank != 2 && rank != 3) || kd.size() != rank || td.size() != rank) return std::nullopt;
  const int64_t N = rank == 3 ? qd[0] : 1;
  if (rank == 3 && (kd[0] != N || td[0] != N)) return std::nullopt;
  if (kd[rank - 1] != qd[rank - 1] || td[rank - 1] != kd[rank - 2]) return std::nullopt;
  if (k.element_type() != q.element_type() || t.element_type() != q.element_type()) return std::nullopt;
  return fused_mask::MaskShape{N, td[rank - 2], qd[rank - 2], kd[rank - 2], qd[rank - 1]};
}

template <typename Body>
ffi::Error dispatch_mask(const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& t, Body&& body) {
  const auto shape = mask_shape(q, k, t);
  if (!shape) return ffi::Error::InvalidArgument("fused mask: Q (P, D), K (C, D) and t (B, C) of one dtype expected");
  return with_dtype(q.element_type(), *shape, body, "fused mask");
}

ffi::Error mask_forward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer t,
                        ffi::AnyBuffer scale, ffi::AnyBuffer shift, ffi::AnyBuffer ebias,
                        ffi::Result<ffi::AnyBuffer> alpha, ffi::Result<ffi::AnyBuffer> offset,
                        ffi::Result<ffi::AnyBuffer> mask, ffi::Result<ffi::AnyBuffer> logits,
                        ffi::Result<ffi::AnyBuffer> pi) {
  return dispatch_mask(q, k, t, [&]<typename T>(const fused_mask::MaskShape& s) {
    fused_mask::mask_forward(in<T>(q), in<T>(k), in<T>(t), in<T>(scale), in<T>(shift), in<T>(ebias), out<T>(alpha),
                             out<T>(offset), out<T>(mask), out<T>(logits), out<T>(pi), s, OverPool{pool});
    return ffi::Error::Success();
  });
}

ffi::Error mask_backward(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer t,
                         ffi::AnyBuffer scale, ffi::AnyBuffer ebias, ffi::AnyBuffer mask, ffi::AnyBuffer logits,
                         ffi::AnyBuffer pi, ffi::AnyBuffer g_alpha, ffi::AnyBuffer g_offset,
                         ffi::Result<ffi::AnyBuffer> g_q, ffi::Result<ffi::AnyBuffer> g_k,
                         ffi::Result<ffi::AnyBuffer> g_t, ffi::Result<ffi::AnyBuffer> g_scale,
                         ffi::Result<ffi::AnyBuffer> g_shift, ffi::Result<ffi::AnyBuffer> g_ebias) {
  return dispatch_mask(q, k, t, [&]<typename T>(const fused_mask::MaskShape& s) {
    fused_mask::mask_backward(in<T>(q), in<T>(k), in<T>(t), in<T>(scale), in<T>(ebias), in<T>(mask), in<T>(logits),
                              in<T>(pi), in<T>(g_alpha), in<T>(g_offset), out<T>(g_q), out<T>(g_k), out<T>(g_t),
                              out<T>(g_scale), out<T>(g_shift), out<T>(g_ebias), s, OverPool{pool});
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptStatsForward, stats_forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<double>("eps")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptPoolForward, pool_forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptPoolGradQ, pool_grad_q,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptBlockBackward, block_backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptMaskForward, mask_forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(TromptMaskBackward, mask_backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
