"""The state round trip every backend must pass, shared by the contract suite and the backends'
own tests of further options."""

import numpy as np

from backends import spec


def assert_continues_bit_identically(b, cfg, x, y, batches, **options):
    """A trainer loaded with another's state after two steps (from other parameters) continues
    exactly like it: the same losses and the same state, to the bit."""
    first = b.trainer(spec.init_params(cfg), cfg, x, y, **options)
    first.run(batches[:2])
    saved = first.state()
    assert int(saved["step"]) == 2
    first.run(batches[2:])
    second = b.trainer(spec.init_params(cfg, seed=5), cfg, x, y, **options)
    second.load_state(saved)
    second.run(batches[2:])
    assert second.losses() == first.losses()[2:]
    theirs, ours = first.state(), second.state()
    assert set(theirs) == set(ours)
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and np.array_equal(ours[k], v), k
