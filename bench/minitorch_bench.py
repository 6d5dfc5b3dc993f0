"""minitorch: simple (pure Python) ops vs numba fast ops vs numpy, on matmul and a map/zip/reduce chain.

For every size each engine runs once untimed (numba compiles then; that first call is reported
separately), then ``--repeats`` interleaved timed runs (one for the slow pure-Python backend);
ratios use each engine's best run, and medians are recorded too. Ratios:

* ``fast_vs_simple``: how many times faster the numba backend is than the pure-Python one;
* ``fast_vs_numpy``: numpy's time divided by ours, i.e. the fraction of numpy's speed we reach.

The pure-Python backend is only timed up to ``--simple-max`` (a 512x512 matmul would take
minutes). Results go to stdout and, with ``--json PATH``, to a JSON file (written atomically).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import output, sysinfo

MATMUL_SIZES = (64, 128, 256, 512)
CHAIN_SIZES = (128, 256, 512)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=list(MATMUL_SIZES), metavar="N",
                        help="square matmul sizes N (N x N @ N x N)")
    parser.add_argument("--chain-sizes", type=int, nargs="+", default=list(CHAIN_SIZES), metavar="N",
                        help="N x N inputs for the chain relu(a * b + a).sum(1)")
    parser.add_argument("--simple-max", type=int, default=128,
                        help="largest N timed on the pure-Python backend (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, size: int, engines: dict[str, Callable[[], Any] | None], repeats: int) -> dict:
    """Time each engine; ratios use each engine's best run.

    Runs are interleaved (fast, numpy, fast, numpy, ...) so that slow phases of a shared machine
    hit both alike, and we keep the minimum: other work only ever adds time, so the best run is
    the steadiest estimate of what the code itself costs. The median is recorded as well. The
    pure-Python backend runs once (after its untimed first call) because it is so slow.
    """
    row: dict[str, Any] = {"op": name, "size": size}
    present = {engine: fn for engine, fn in engines.items() if fn is not None}
    times: dict[str, list[float]] = {engine: [] for engine in present}
    for engine, fn in present.items():
        first = timed(fn)  # numba compiles on the first call of a new kernel
        if engine == "fast":
            row["fast_first_call_s"] = first
    for _ in range(repeats):
        for engine, fn in present.items():
            if engine != "simple" or not times[engine]:
                times[engine].append(timed(fn))
    for engine in engines:
        row[f"{engine}_s"] = min(times[engine]) if engine in present else None
        row[f"{engine}_median_s"] = statistics.median(times[engine]) if engine in present else None
    fast, simple, numpy_s = row["fast_s"], row["simple_s"], row["numpy_s"]
    row["fast_vs_simple"] = simple / fast if simple else None
    row["fast_vs_numpy"] = numpy_s / fast
    return row


def as_tensors(backend: Any, *values: Any) -> list[Any]:
    import minitorch

    return [minitorch.Tensor.make(v.ravel().copy(), v.shape, backend=backend) for v in values]


def matmul_engines(a: Any, b: Any, with_simple: bool) -> dict[str, Callable[[], Any] | None]:
    """The three ways to compute a @ b; checks first that fast ops get numpy's answer."""
    import numpy as np

    import minitorch

    fa, fb = as_tensors(minitorch.TensorBackend(minitorch.FastOps), a, b)
    sa, sb = as_tensors(minitorch.SimpleBackend, a, b)
    np.testing.assert_allclose((fa @ fb).to_numpy(), a @ b, rtol=1e-9)
    return {
        "simple": (lambda: sa @ sb) if with_simple else None,
        "fast": lambda: fa @ fb,
        "numpy": lambda: a @ b,
    }


def chain_engines(a: Any, b: Any, with_simple: bool) -> dict[str, Callable[[], Any] | None]:
    """relu(a * b + a).sum(1): two zips, a map and a reduce."""
    import numpy as np

    import minitorch

    def chain(x: Any, y: Any) -> Any:
        return (x * y + x).relu().sum(1)

    def numpy_chain() -> Any:
        return np.maximum(a * b + a, 0).sum(1, keepdims=True)

    fa, fb = as_tensors(minitorch.TensorBackend(minitorch.FastOps), a, b)
    sa, sb = as_tensors(minitorch.SimpleBackend, a, b)
    np.testing.assert_allclose(chain(fa, fb).to_numpy(), numpy_chain(), rtol=1e-9)
    return {"simple": (lambda: chain(sa, sb)) if with_simple else None, "fast": lambda: chain(fa, fb),
            "numpy": numpy_chain}


def run(args: argparse.Namespace) -> int:
    sizes = list(args.matmul_sizes) + list(args.chain_sizes)
    if any(n < 1 for n in sizes) or args.repeats < 1 or args.simple_max < 0:
        raise ValueError("sizes, --repeats must be at least 1 and --simple-max non-negative")

    import numba
    import numpy as np

    import minitorch

    rng = np.random.default_rng(0)
    rows = []

    print(f"minitorch bench on {sysinfo.cpu_name()}, numba {numba.__version__} with "
          f"{numba.config.NUMBA_NUM_THREADS} threads")
    columns = "".join(f"{c:>12}" for c in ("simple s", "fast s", "numpy s"))
    print(f"{'op':<8}{'N':>6}{columns}{'fast/simple':>13}{'% of numpy':>12}")

    def report(row: dict) -> None:
        rows.append(row)
        simple = f"{row['simple_s']:.4g}" if row["simple_s"] is not None else "-"
        ratio = f"{row['fast_vs_simple']:.0f}x" if row["fast_vs_simple"] else "-"
        print(f"{row['op']:<8}{row['size']:>6}{simple:>12}{row['fast_s']:>12.4g}{row['numpy_s']:>12.4g}"
              f"{ratio:>13}{100 * row['fast_vs_numpy']:>11.1f}%", flush=True)

    for n in args.matmul_sizes:
        a, b = rng.random((n, n)), rng.random((n, n))
        report(measure("matmul", n, matmul_engines(a, b, n <= args.simple_max), args.repeats))
    for n in args.chain_sizes:
        a, b = rng.normal(size=(n, n)), rng.normal(size=(n, n))
        report(measure("chain", n, chain_engines(a, b, n <= args.simple_max), args.repeats))

    record = {
        "benchmark": "minitorch",
        "device": sysinfo.cpu_name(),
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numpy": np.__version__,
        "git_commit": sysinfo.git_commit(),
        "repeats": args.repeats,
        "parallel_min_size": minitorch.fast_ops.PARALLEL_MIN_SIZE,
        "results": rows,
    }
    if args.json:
        output.write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
