"""Every registered backend against the float64 reference through the numpy API (`bench check`):
forward, loss, every live gradient and the updates of three AdamW steps, at a small config with
odd sizes. A backend whose framework cannot do a dtype must say so with a one-line ValueError."""

import importlib.util

import numpy as np
import pytest

import backends
from backends import spec
from bench.check import CHECK_CONFIG, check_backend, format_report

CASES = [(name, dtype) for name in backends.REGISTRY for dtype in spec.DTYPES]


def require_implemented(name: str) -> None:
    module = backends.REGISTRY[name][0]
    if importlib.util.find_spec(module) is None:  # the backend's issue has not landed yet
        pytest.skip(f"backend {name} is not implemented in this checkout")


@pytest.mark.parametrize("name, dtype", CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_backend_matches_the_float64_reference(name, dtype):
    require_implemented(name)
    try:
        b = backends.load(name, dtype=dtype)
    except ValueError as e:  # only an honest "this framework cannot do float64" is acceptable
        assert dtype == "float64" and "float64" in str(e) and "\n" not in str(e), str(e)
        return
    result = check_backend(name, dtype=dtype)
    assert result["verdict"] == "pass", format_report(result, full=True)
    assert b.forward(spec.init_params(CHECK_CONFIG), np.zeros((2, CHECK_CONFIG.n_columns)),
                     CHECK_CONFIG).shape == (2, CHECK_CONFIG.n_cycles)


@pytest.mark.parametrize("name", list(backends.REGISTRY))
def test_backend_rejects_bad_input_in_one_line(name):
    require_implemented(name)
    b = backends.load(name)
    cfg = CHECK_CONFIG
    p = spec.init_params(cfg)
    x = np.zeros((3, cfg.n_columns), np.float32)
    cases = [
        (lambda: b.forward(p, x[:, :-1], cfg), "columns"),
        (lambda: b.forward(p, x[0], cfg), "2-D"),
        (lambda: b.forward({k: v for k, v in p.items() if k != "prompt"}, x, cfg), "missing"),
        (lambda: b.loss_and_grad(p, x, np.array([0, np.inf, 0]), cfg), "NaN or inf"),
        (lambda: backends.load(name, device="no-such-device"), "unknown device"),
        (lambda: b.trainer(p, cfg, x, np.zeros(3), no_such_option=1), "no_such_option"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
