"""The original, deliberately slow Trompt (model.py) behind the backend contract (backend.py): the
numerical oracle every backend is checked against, and the baseline every speed-up is quoted to."""

from backends.registry import register

register("reference", "reference.backend:ReferenceBackend", framework="torch", extra="torch")
