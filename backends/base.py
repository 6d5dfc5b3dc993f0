"""The contract every backend implements, written once (like MiniTorch's TensorOps).

A backend is two classes, both in `backends/<fw>/train.py`:

    Backend   what the framework offers (devices, dtypes, trainer options) and the numpy surface
              that `bench check` and the tests use:
                  b.forward(params, x, cfg, **options)          -> (B, n_cycles) predictions
                  b.loss_and_grad(params, x, y, cfg, **options) -> (loss, {name: gradient})
                  b.train_steps(params, batches, cfg, lr, wd, state=None, **options)
                                                                 -> (new params, [loss per step])
              All three are written here once, on top of the Trainer.
    Trainer   parameters, AdamW moments and the whole training set resident on the device; it
              takes batches of row indices, so a step moves nothing but a few integers. The
              subclass writes the underscored methods; the public ones here validate first, so
              every framework rejects bad input with the same one-line ValueError.

State (`Trainer.state()` / `Trainer.load_state()`) is numpy in canonical parameter names:
"param/<name>", "exp_avg/<name>", "exp_avg_sq/<name>" (torch.optim.AdamW's moment names) and
the scalar "step". It is all a checkpoint holds, and `train_steps` carries it between calls, so a
backend that saves and restores it exactly resumes bit-for-bit.

Options are declared once per backend as `Option`s (name, type, choices, default, help); the
base parses `--opt key=value` strings and Python values alike, and `bench options` lists them.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import platform
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from backends import native, spec
from backends.spec import TromptConfig

STATE_PREFIXES = ("param", "exp_avg", "exp_avg_sq")
NONE_WORDS = ("none", "null", "")
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


# ---------------------------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class Option:
    """One trainer option. `exact` lists the values that keep the original computation (None:
    every value does); any other value makes `bench check` say "not exact" instead of "pass"."""

    name: str
    kind: type  # bool, int, float or str
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None  # for int and float
    nullable: bool = False  # None ("none") is a valid value
    exact: tuple | None = None

    def parse(self, value: Any) -> Any:
        """The option's value from a Python value or from the text of `--opt key=value`."""
        if isinstance(value, str) and (self.kind is not str or self.nullable):
            value = self._from_text(value)
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"option {self.name} cannot be none")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"option {self.name} must be true or false, got {value!r}")
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"option {self.name} must be an integer, got {value!r}")
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(value):
                raise ValueError(f"option {self.name} must be a finite number, got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise ValueError(f"option {self.name} must be text, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"option {self.name}={value!r} is not one of "
                             f"{', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"option {self.name} must be >= {self.minimum:g}, got {value!r}")
        return value

    def _from_text(self, text: str) -> Any:
        lowered = text.strip().lower()
        if self.nullable and lowered in NONE_WORDS:
            return None
        if self.kind is bool:
            if lowered in TRUE_WORDS:
                return True
            if lowered in FALSE_WORDS:
                return False
            raise ValueError(f"option {self.name} must be true or false, got {text!r}")
        if self.kind in (int, float):
            try:
                return self.kind(text)
            except ValueError:
                what = "an integer" if self.kind is int else "a number"
                raise ValueError(f"option {self.name} must be {what}, got {text!r}") from None
        return text

    def describe(self) -> str:
        """One line for `bench options`: name, type or choices, default, help."""
        kind = "|".join(map(str, self.choices)) if self.choices else self.kind.__name__
        return f"{self.name}={kind} (default {self.default}): {self.help}"


def parallel_option(*modes: str) -> Option:
    """Every backend has `parallel` (bench's --parallel); "none" is one process on one device."""
    return Option("parallel", str, "none", "multi-device mode: " + ", ".join(("none", *modes)),
                  choices=("none", *modes))


# ---------------------------------------------------------------------------------------------
# Trainer


class Trainer(abc.ABC):
    """AdamW training resident on one backend's device(s); see the module docstring."""

    predict_chunk: ClassVar[int] = 64  # rows per forward in predict(): bounds the activations
    op_time_basis: ClassVar[str] = ""  # what op_times's seconds are (`bench profile --ops` says it)

    def __init__(self, backend: Backend, params: dict[str, np.ndarray], cfg: TromptConfig,
                 x_train: np.ndarray, y_train: np.ndarray, lr: float, weight_decay: float,
                 options: dict[str, Any]) -> None:
        """`params` and the data arrive validated and cast to the backend's dtype, `options`
        parsed and complete (every declared option present)."""
        self.backend, self.cfg, self.lr, self.weight_decay = backend, cfg, lr, weight_decay
        self.options = options
        self.n_train = len(x_train)

    # -- to implement --------------------------------------------------------------------------
    @abc.abstractmethod
    def _run(self, batches: list[np.ndarray]) -> None:
        """One optimizer step per batch of int64 row indices (validated); may fuse them."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Block until all queued device work is done (timers stop only after this)."""

    @abc.abstractmethod
    def losses(self) -> list[float]:
        """Every step's training loss since the trainer was made (reading them may synchronise)."""

    @abc.abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray:
        """(rows, n_cycles) predictions of at most `predict_chunk` rows, current parameters."""

    @abc.abstractmethod
    def _gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Loss (mean over rows x cycles) and every parameter's gradient on the training rows
        `rows` at the current parameters, without stepping. Raise NotImplementedError where a
        mode cannot produce them (the check then compares everything else)."""

    @abc.abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Parameters, both AdamW moments and the step count (collective in multi-process modes)."""

    @abc.abstractmethod
    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        """Adopt a state (validated, cast to the backend's dtype); the next step continues it."""

    # -- optional ------------------------------------------------------------------------------
    def peak_memory_mb(self) -> float | None:
        """Peak device memory if the framework reports it (host memory is measured by bench)."""
        return None

    def agree_max(self, value: float) -> float:
        """The largest `value` over the processes of a multi-process run (itself when alone):
        every rank must run the same number of steps, or a collective waits for a finished peer."""
        return value

    def run_notes(self) -> dict[str, Any]:
        """Facts about this trainer's run that a timing result keeps (its "trainer_notes"), e.g.
        seconds spent autotuning kernels during warm-up, which the first step's time includes."""
        return {}

    def samples_per_step(self, batch: np.ndarray) -> int:
        """Training rows a step on `batch` consumes (all ranks together)."""
        return len(batch)

    def min_warmup_steps(self) -> int:
        """Training steps a timing warm-up must take before steps run at their steady speed: 1
        (the step that compiles), more where the first steps differ, e.g. eager steps before a
        CUDA-graph capture. Equal on every rank of a multi-process run."""
        return 1

    def op_times(self, batches: Sequence[np.ndarray]) -> list[tuple[str, float, int]] | None:
        """Train on `batches` under the framework's own profiler and return, per compiled op,
        (name, seconds summed over its executions, executions), most expensive first; None where
        the backend offers no such profile (`bench profile --ops` then says so)."""
        return None

    def timed_steps_multiple(self) -> int:
        """A number of steps that `run` always dispatches in fused calls (JAX: its shortest
        lax.scan), never one at a time: bench times repeats of a multiple of it where one fits,
        so that no timed step takes the slower single-step path."""
        return 1

    # -- public, validated ---------------------------------------------------------------------
    def run(self, batches: Sequence[np.ndarray]) -> None:
        """One optimizer step per batch of row indices into the training set."""
        checked = [check_rows(rows, self.n_train) for rows in batches]
        if checked:
            self._run(checked)

    def step(self, rows: np.ndarray) -> None:
        self.run([rows])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, n_cycles) predictions with the current parameters, in chunks of rows (rows are
        independent, so chunking changes no number)."""
        spec.check_x(x, self.cfg)
        x = np.asarray(x, dtype=self.backend.dtype)
        parts = [np.asarray(self._predict(x[i:i + self.predict_chunk]))
                 for i in range(0, len(x), self.predict_chunk)]
        return np.concatenate(parts).astype(self.backend.dtype, copy=False)

    def gradients(self, rows: np.ndarray) -> tuple[float, dict[str, np.ndarray]] | None:
        """(loss, {name: gradient}) on training rows `rows` now, or None where not exposed."""
        rows = check_rows(rows, self.n_train)
        try:
            loss, grads = self._gradients(rows)
        except NotImplementedError:
            return None
        return float(loss), {k: np.asarray(grads[k]) for k in spec.param_names(self.cfg)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, self.cfg)
        dtype = self.backend.dtype
        self._load_state({k: (np.asarray(v, dtype=np.int64) if k == "step" else np.asarray(v, dtype=dtype))
                          for k, v in state.items()})

    def params(self) -> dict[str, np.ndarray]:
        """Canonical numpy parameters (a trainer may override with something cheaper)."""
        state = self.state()
        return {k: state[f"param/{k}"] for k in spec.param_names(self.cfg)}


def check_rows(rows: Any, n_train: int) -> np.ndarray:
    """A batch must be a non-empty 1-D array of integer row indices in [0, n_train)."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or len(rows) == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"a batch must be a non-empty 1-D array of integer row indices, got "
                         f"shape {rows.shape} dtype {rows.dtype}")
    if rows.min() < 0 or rows.max() >= n_train:
        raise ValueError(f"row index out of range [0, {n_train}) in a batch")
    return rows.astype(np.int64, copy=False)


def check_state(state: dict[str, np.ndarray], cfg: TromptConfig) -> None:
    """A trainer state must hold every parameter and both moments with the right shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"trainer state must be a dict, got {type(state).__name__}")
    for name, shape in spec.param_shapes(cfg).items():
        for prefix in STATE_PREFIXES:
            key = f"{prefix}/{name}"
            if key not in state:
                raise ValueError(f"trainer state lacks {key}")
            if tuple(np.shape(state[key])) != shape:
                raise ValueError(f"trainer state {key} has shape {np.shape(state[key])}, expected {shape}")
            if not np.all(np.isfinite(state[key])):
                raise ValueError(f"trainer state {key} holds NaN or inf")
    if "step" not in state or np.ndim(state["step"]) != 0 or int(state["step"]) < 0:
        raise ValueError("trainer state lacks a non-negative scalar 'step'")


def batches_as_rows(batches: list, cfg: TromptConfig) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Validate (x, y) batches and lay them end to end: (x_all, y_all, each batch's row indices),
    so that `train_steps` can replay them through a device-resident trainer as index batches."""
    for x, y in batches:
        spec.check_x(x, cfg)
        spec.check_y(y, x)
    if not batches:
        return np.zeros((0, cfg.n_columns)), np.zeros(0), []
    ends = np.cumsum([len(x) for x, _ in batches])
    rows = [np.arange(end - len(x), end) for end, (x, _) in zip(ends, batches)]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]), rows


# ---------------------------------------------------------------------------------------------
# Backend


class Backend(abc.ABC):
    """One framework on one device in one dtype. Subclasses set the class attributes below and
    may override `_check_device_present`, `_check_options`, `device_name` and `versions`."""

    name: ClassVar[str] = "base"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    dtypes: ClassVar[tuple[str, ...]] = spec.DTYPES
    options: ClassVar[tuple[Option, ...]] = (parallel_option(),)
    trainer_class: ClassVar[type[Trainer]]

    def __init__(self, device: str = "cpu", dtype: str = "float32") -> None:
        spec.check_dtype(dtype)
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r} for backend {self.name!r}; "
                             f"choose one of {', '.join(self.devices)}")
        if dtype not in self.dtypes:
            raise ValueError(f"backend {self.name!r} does not support {dtype} "
                             f"(supported: {', '.join(self.dtypes)})")
        self.device, self.dtype = device, dtype
        self._check_device_present()

    # -- to override where needed --------------------------------------------------------------
    def _check_device_present(self) -> None:
        """Raise ValueError naming what the framework sees when `self.device` is absent."""
        return None

    def _check_options(self, options: dict[str, Any]) -> None:
        """Reject combinations of options (or option and device/dtype) that cannot work."""
        return None

    def device_name(self) -> str:
        """Human-readable name of the device, e.g. the CPU model or 'NVIDIA H100'."""
        return cpu_name()

    def versions(self) -> dict[str, str]:
        return {}

    # -- options -------------------------------------------------------------------------------
    @classmethod
    def option(cls, name: str) -> Option:
        return next(o for o in cls.options if o.name == name)

    def parse_options(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every declared option, given or default, parsed; unknown names are a ValueError."""
        given = dict(given or {})
        known = [o.name for o in self.options]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for backend {self.name!r}; "
                             f"known: {', '.join(known)}")
        parsed = {o.name: o.parse(given[o.name]) if o.name in given else o.default for o in self.options}
        self._check_options(parsed)
        return parsed

    def inexact_options(self, options: dict[str, Any]) -> list[str]:
        """'key=value' for each option whose value changes what the original computes (e.g. AMP)."""
        parsed = self.parse_options(options)
        return [f"{o.name}={parsed[o.name]}" for o in self.options
                if o.exact is not None and parsed[o.name] not in o.exact]

    # -- the trainer and the numpy surface built on it -----------------------------------------
    def trainer(self, params: dict[str, np.ndarray], cfg: TromptConfig, x_train: np.ndarray,
                y_train: np.ndarray, lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                **options: Any) -> Trainer:
        """A device-resident trainer over the whole training set (see `Trainer`)."""
        spec.check_params(params, cfg)
        spec.check_x(x_train, cfg)
        spec.check_y(y_train, x_train)
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        parsed = self.parse_options(options)
        params = {k: np.asarray(params[k], dtype=self.dtype) for k in spec.param_names(cfg)}
        return self.trainer_class(self, params, cfg, np.asarray(x_train, dtype=self.dtype),
                                  np.asarray(y_train, dtype=self.dtype), lr, weight_decay, parsed)

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, cfg: TromptConfig,
                **options: Any) -> np.ndarray:
        """(B, n_cycles) predictions of `params` on `x`."""
        spec.check_x(x, cfg)
        return self.trainer(params, cfg, x, np.zeros(len(x)), **options).predict(x)

    def loss_and_grad(self, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                      cfg: TromptConfig, **options: Any) -> tuple[float, dict[str, np.ndarray]]:
        """MSE over B x n_cycles and its gradient for every canonical parameter."""
        trainer = self.trainer(params, cfg, x, y, **options)
        out = trainer.gradients(np.arange(len(x)))
        if out is None:
            raise ValueError(f"backend {self.name!r} does not expose gradients with options {options}")
        return out

    def train_steps(self, params: dict[str, np.ndarray], batches: list, cfg: TromptConfig,
                    lr: float = spec.LR, weight_decay: float = spec.WEIGHT_DECAY,
                    state: dict[str, np.ndarray] | None = None,
                    **options: Any) -> tuple[dict[str, np.ndarray], list[float]]:
        """This backend's own AdamW over the (x, y) `batches`, one step each. A `state` dict from
        a previous call (its moments and step count) carries over and is updated in place."""
        x_all, y_all, rows = batches_as_rows(batches, cfg)
        spec.check_params(params, cfg)
        if not rows:
            return {k: np.array(params[k], dtype=self.dtype) for k in spec.param_names(cfg)}, []
        trainer = self.trainer(params, cfg, x_all, y_all, lr, weight_decay, **options)
        if state:
            trainer.load_state({**state, **{f"param/{k}": v for k, v in params.items()}})
        trainer.run(rows)
        new_state = trainer.state()
        if state is not None:
            state.clear()
            state.update(new_state)
        return {k: new_state[f"param/{k}"] for k in spec.param_names(cfg)}, trainer.losses()


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows, with the core count
    and the widest vector unit it reports ("AMD EPYC (2 cores, AVX-512)"): one VM model name can
    stand for CPUs of different generations, whose speeds differ."""
    model = native.cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine()
    flags = set((native.cpuinfo_field("flags", cpuinfo) or "").split())
    vector = next((name for flag, name in CPU_VECTOR_UNITS if flag in flags), None)
    return f"{model} ({os.cpu_count()} cores" + (f", {vector})" if vector else ")")


# /proc/cpuinfo flag -> the name a result shows, widest first.
CPU_VECTOR_UNITS = (("amx_tile", "AVX-512 + AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
