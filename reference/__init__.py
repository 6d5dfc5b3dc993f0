"""The original, deliberately slow Trompt and its training loop: the oracle (see model.py, train.py)."""
