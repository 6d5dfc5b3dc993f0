"""Every registered backend honours backends/base.py the same way: shapes and dtypes, options,
one-line errors, exact state round trips, `train_steps` carry-over, and the equivalence check."""

import subprocess
import sys

import numpy as np
import pytest

import backends
from backends import spec
from bench import check
from tests.contract.conftest import BATCHES, CFG
from tests.contract.round_trip import assert_continues_bit_identically

DTYPES = ["float32", "float64"]


def one_line(error: pytest.ExceptionInfo) -> bool:
    return "\n" not in str(error.value) and len(str(error.value)) > 10


def test_options_are_declared_once_with_parallel_among_them(name):
    cls = backends.backend_class(name)
    names = [o.name for o in cls.options]
    assert len(names) == len(set(names)) and "parallel" in names
    for option in cls.options:
        assert option.parse(option.default) == option.default, option.name
        assert option.help and option.describe().startswith(f"{option.name}=")


def test_bench_options_lists_every_option(name):
    run = subprocess.run([sys.executable, "-m", "bench", "options", "--backend", name],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for option in backends.backend_class(name).options:
        assert f"  {option.name}=" in run.stdout


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_gives_one_prediction_per_row_and_cycle_in_the_dtype(name, dtype, data):
    x, _ = data
    pred = backends.load(name, dtype=dtype).forward(spec.init_params(CFG), x, CFG)
    assert pred.shape == (len(x), CFG.n_cycles) and pred.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(pred))


def test_bad_input_is_one_line_value_error(name, data):
    x, y = data
    b = backends.load(name)
    params = spec.init_params(CFG)
    cases = [
        lambda: b.forward(params, x[:, :-1], CFG),  # wrong column count
        lambda: b.forward({k: v for k, v in params.items() if k != "prompt"}, x, CFG),  # a missing parameter
        lambda: b.trainer(params, CFG, x, y[:-1]),  # rows of x and y differ
        lambda: b.trainer(params, CFG, x, y, turbo=True),  # unknown option
        lambda: b.trainer(params, CFG, x, y, parallel="warp"),  # not one of the choices
        lambda: b.trainer(params, CFG, x, y).run([np.array([0, len(x)])]),  # row out of range
        lambda: b.trainer(params, CFG, x, y).run([np.array([], dtype=int)]),  # empty batch
        lambda: b.trainer(params, CFG, x, y).load_state({"step": np.array(1)}),  # incomplete state
        lambda: backends.load(name, device="abacus"),
    ]
    for i, case in enumerate(cases):
        with pytest.raises(ValueError) as error:
            case()
        assert one_line(error), (i, str(error.value))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_trainer_loaded_from_another_state_continues_bit_identically(name, dtype, data):
    x, y = data
    assert_continues_bit_identically(backends.load(name, dtype=dtype), CFG, x, y, BATCHES)


def test_train_steps_carries_the_optimizer_state_between_calls(name, data):
    x, y = data
    b = backends.load(name, dtype="float64")
    batches = [(x[rows], y[rows]) for rows in BATCHES]
    params = spec.init_params(CFG, dtype="float64")
    whole, whole_losses = b.train_steps(params, batches, CFG)
    state: dict = {}
    half, first = b.train_steps(params, batches[:2], CFG, state=state)
    assert int(state["step"]) == 2
    split, second = b.train_steps(half, batches[2:], CFG, state=state)
    assert first + second == whole_losses
    for k in whole:
        np.testing.assert_array_equal(split[k], whole[k], err_msg=k)


def test_gradients_do_not_move_the_parameters(name, data):
    x, y = data
    trainer = backends.load(name, dtype="float64").trainer(spec.init_params(CFG), CFG, x, y)
    before = trainer.params()
    loss, grads = trainer.gradients(np.arange(8))
    assert np.isfinite(loss) and set(grads) == set(spec.param_names(CFG))
    for k, v in trainer.params().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_default_trainer_passes_the_check(name, dtype):
    result = check.check_trainer(name, dtype=dtype)
    assert result["verdict"] == "pass", check.format_report(result)
    assert result["gradients_exposed"]
