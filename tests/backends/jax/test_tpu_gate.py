"""The JAX backend refuses float64 on a TPU in one line (TPUs have no float64 units), and keeps
float32 there; checked on the CPU with `jax.devices` answering a fake TPU chip."""

import types

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax  # noqa: E402

import backends  # noqa: E402

pytestmark = pytest.mark.xdist_group("jax")

FAKE_TPU = types.SimpleNamespace(platform="tpu", id=0, device_kind="TPU v5 lite")


@pytest.fixture
def one_fake_tpu(monkeypatch):
    real = jax.devices

    def devices(backend=None):
        return [FAKE_TPU] if backend == "tpu" else real(backend)

    monkeypatch.setattr(jax, "devices", devices)


def test_float64_on_a_tpu_is_refused_in_one_line(one_fake_tpu):
    with pytest.raises(ValueError) as e:
        backends.load("jax", device="tpu", dtype="float64")
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert "float64" in message and "'tpu'" in message and "float32" in message


def test_float32_on_a_tpu_is_accepted(one_fake_tpu):
    backend = backends.load("jax", device="tpu", dtype="float32")
    assert backend.device == "tpu" and backend.dtype == "float32"
    assert backend.device_name() == "TPU v5 lite"
    assert backend.parse_options({})["precision"] == "highest"


def test_float64_on_the_cpu_is_still_accepted(one_fake_tpu):
    assert backends.load("jax", device="cpu", dtype="float64").dtype == "float64"


def test_without_a_tpu_the_message_names_what_jax_sees():
    with pytest.raises(ValueError, match="JAX sees only"):
        backends.load("jax", device="tpu", dtype="float64")
