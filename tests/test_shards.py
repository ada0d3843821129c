"""Slices of θ for a sharded parameter server (ddqn.distributed.shards.slices): S shards applying their slices of the same
gradients hold exactly the θ and solver history one server would, bit for bit, for every solver type."""
from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from ddqn.distributed.shards import votes
from ddqn.distributed.shards.slices import bounds, layout_slice, shard_solver, slice_history
from ddqn.errors import ConfigError
from ddqn.net.netspec import load_netspec
from ddqn.solvers.flat import make_solver, parse_solver_spec

ROOT_NET = "ddqn/prototxt/snake_paper.prototxt"
SOLVERS = {
    "SGD": 'type: "SGD" base_lr: 0.01 lr_policy: "step" stepsize: 2 gamma: 0.5 momentum: 0.9 weight_decay: 0.001',
    "AdaGrad": 'type: "AdaGrad" base_lr: 0.01 lr_policy: "fixed" delta: 1e-6',
    "RMSProp": 'type: "RMSProp" base_lr: 0.001 lr_policy: "fixed" rms_decay: 0.95 delta: 0.01 weight_decay: 0.0005 '
               'regularization_type: "L1"',
    "Adam": 'type: "Adam" base_lr: 0.0001 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999 delta: 1e-8',
}


def test_bounds_cover_the_vector_in_nearly_equal_slices() -> None:
    assert bounds(10, 1) == [(0, 10)]
    assert bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert bounds(228_132, 3)[-1][1] == 228_132
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="ps_shards"):
            bounds(10, bad)


def test_a_slice_of_the_layout_keeps_each_blobs_multipliers() -> None:
    params = load_netspec(ROOT_NET).params
    lo, hi = params[1].offset - 3, params[2].offset + 5  # cuts conv1's weights, keeps its bias whole, cuts conv2's
    part = layout_slice(params, lo, hi)
    assert [p.size for p in part] == [3, params[1].size, 5] and part[0].offset == 0
    assert part[1].shape == params[1].shape and part[0].shape == (3,)
    assert sum(p.size for p in part) == hi - lo


@pytest.mark.parametrize("kind", sorted(SOLVERS))
@pytest.mark.parametrize("shards", [1, 4])
def test_shards_apply_the_same_theta_bit_for_bit(kind: str, shards: int) -> None:
    spec = load_netspec(ROOT_NET)
    params = tuple(p if i % 3 else p.__class__(**{**p.__dict__, "lr_mult": 2.0, "decay_mult": 0.0})
                   for i, p in enumerate(spec.params))  # multipliers that differ from blob to blob
    solver_spec = parse_solver_spec(SOLVERS[kind], f"{kind}.prototxt")
    rng = np.random.default_rng(0)
    theta = (0.05 * rng.standard_normal(spec.num_params)).astype(np.float32)
    whole, one = make_solver(solver_spec, params), theta.copy()
    parts = [(lo, hi, shard_solver(solver_spec, params, lo, hi), theta[lo:hi].copy())
             for lo, hi in bounds(spec.num_params, shards)]
    for _ in range(5):
        grad = (0.1 * rng.standard_normal(spec.num_params)).astype(np.float32)
        whole.apply(one, grad)
        for lo, hi, solver, slice_theta in parts:
            solver.apply(slice_theta, grad[lo:hi])
    assert np.array_equal(np.concatenate([t for *_, t in parts]), one)
    for lo, hi, solver, _ in parts:
        assert solver.iter == whole.iter == 5
        assert all(np.array_equal(a, b) for a, b in zip(solver.history, slice_history(whole, lo, hi)))


def test_clip_gradients_needs_the_whole_gradient() -> None:
    spec = load_netspec(ROOT_NET)
    clip = parse_solver_spec('type: "SGD" base_lr: 0.01 lr_policy: "fixed" clip_gradients: 10', "clip.prototxt")
    assert shard_solver(clip, spec.params, 0, spec.num_params).spec.clip_gradients == 10  # one shard: the whole
    with pytest.raises(ConfigError, match="clip.prototxt: clip_gradients"):
        shard_solver(clip, spec.params, 0, spec.num_params // 2)


def test_a_votes_mac_is_hmac_sha256_and_every_signed_byte_counts() -> None:
    """VoteKey (keyed once, copied per vote) gives HMAC-SHA256 for short, block-sized and long keys; a COMMIT's
    votes with any byte changed (a signed one, or a pad byte), or for another push, do not open."""
    for size in (16, 32, 64, 65, 100):
        key = bytes(range(size))
        for message in (b"", b"x" * 51, b"y" * 200):
            assert votes.VoteKey(key).mac(message) == hmac.new(key, message, hashlib.sha256).digest()[:16]
    key = b"k" * 32
    cast = b"".join(votes.seal(key, 1, 0, 7, 2, votes.Vote(k, True, 0.25 * k)) for k in range(3))
    assert votes.open_all(votes.VoteKey(key), 3, 1, 0, 7, 2, cast) == [votes.Vote(k, True, 0.25 * k) for k in range(3)]
    for i in range(len(cast)):  # the 5 pad bytes of each vote are not signed, but must be zeros
        bad = bytearray(cast)
        bad[i] ^= 1
        assert votes.open_all(key, 3, 1, 0, 7, 2, bytes(bad)) is None, i
    assert votes.open_all(key, 3, 1, 0, 8, 2, cast) is None
