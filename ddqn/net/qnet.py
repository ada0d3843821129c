"""The Q-network: one real ``caffe.Net`` built from a validated prototxt, seen as flat vectors.

Shapes: states are (B, C, H, W) uint8 frames (C stacked frames, 0..255); Q-values are (B, A) float32;
parameters and gradients are one flat float32 vector laid out as ``spec.params`` (Caffe's
``net.params`` order, blob after blob).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ddqn.net.caffe_env import caffe
from ddqn.net.netspec import Q_BLOB, NetSpec


class QNetwork:
    """Q(φ, ·; θ) on pycaffe: Q-values for acting, loss and flat gradient for learning.

    Args:
        spec: the validated prototxt (``load_netspec``); its text is what Caffe builds.
        seed: seeds Caffe's weight fillers, so the same seed gives the same initial θ.
    """

    def __init__(self, spec: NetSpec, seed: int | None = None) -> None:
        cf = caffe()
        if seed is not None:
            cf.set_random_seed(int(seed))
        fd, path = tempfile.mkstemp(suffix=".prototxt", prefix="ddqn-net-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(spec.text)
            self.net = cf.Net(path, cf.TRAIN)
        finally:
            os.unlink(path)
        self.spec = spec
        self._batch = spec.batch_size
        self._data = [self.net.params[p.layer][p.index].data for p in spec.params]
        self._diff = [self.net.params[p.layer][p.index].diff for p in spec.params]
        for p, arr in zip(spec.params, self._data):  # the layout must be Caffe's own
            assert arr.shape == p.shape, (p, arr.shape)
        self._grad = np.empty(spec.num_params, np.float32)
        self._eye = np.eye(spec.num_actions, dtype=np.float32)
        self.td_errors = np.zeros(0, np.float32)  # δ_j = y_j − Q(φ_j, a_j) of the last loss_and_grad minibatch

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector."""
        return self.spec.num_params

    def get_params(self, out: np.ndarray | None = None) -> np.ndarray:
        """θ as one flat float32 vector (written into ``out`` if given)."""
        out = np.empty(self.num_params, np.float32) if out is None else out
        for p, arr in zip(self.spec.params, self._data):
            out[p.offset:p.offset + p.size] = arr.reshape(-1)
        return out

    def set_params(self, theta: np.ndarray) -> None:
        """Copy the flat vector ``theta`` (num_params float32) into the net's blobs."""
        if theta.shape != (self.num_params,):
            raise ValueError(f"expected {self.num_params} parameters, got shape {theta.shape}")
        for p, arr in zip(self.spec.params, self._data):
            arr.reshape(-1)[...] = theta[p.offset:p.offset + p.size]

    def _set_batch(self, n: int) -> None:
        if n == self._batch:
            return
        a = self.spec.num_actions
        self.net.blobs["data"].reshape(n, *self.spec.state_shape)
        self.net.blobs["action_mask"].reshape(n, a)
        self.net.blobs["target"].reshape(n, a)
        self.net.reshape()
        self._batch = n

    def _check_states(self, states: np.ndarray) -> None:
        if states.ndim != 4 or states.shape[1:] != self.spec.state_shape or len(states) == 0:
            raise ValueError(f"states must be (B, {', '.join(map(str, self.spec.state_shape))}), got {states.shape}")

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """Q(φ, a) for a batch: states (B, C, H, W) uint8 → (B, A) float32 (a copy)."""
        self._check_states(states)
        self._set_batch(len(states))
        self.net.blobs["data"].data[...] = states
        self.net.forward(end=self.spec.q_layer)
        return self.net.blobs[Q_BLOB].data.copy()

    def loss_and_grad(self, states: np.ndarray, actions: np.ndarray, targets: np.ndarray,
                      error_clip: float = 0.0, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Loss ½·mean_j (y_j − Q(φ_j, a_j))² and its gradient w.r.t. θ; with ``weights`` the weighted mean
        ½·Σ_j w_j (y_j − Q(φ_j, a_j))² / B (prioritized replay's importance weights).

        Args:
            states: (B, C, H, W) uint8; actions: (B,) int in [0, A); targets: (B,) float y_j.
            error_clip: if > 0, the error y − Q is clipped to [−c, c] in the gradient (Nature DQN's error
                clipping, i.e. a Huber loss, weighted as above); the prototxt's loss layer is then bypassed and the
                gradient enters at the Q-value blob.
            weights: None, or (B,) finite numbers ≥ 0, one per sample. Caffe's loss layer gets them as √w_j on
                the action mask and on the target, so its ½·Σ (mask·Q − mask·y)² / B is the weighted loss; all
                ones give the unweighted loss and gradient bit for bit.
        Returns:
            (loss, grad): grad is a flat float32 vector of num_params, owned by this object and
            overwritten by the next call (copy it to keep it). The call also sets :attr:`td_errors` to the
            minibatch's δ_j = y_j − Q(φ_j, a_j), (B,) float32, a new array (what prioritized replay's priorities
            are made of).
        """
        self._check_states(states)
        n = len(states)
        if actions.shape != (n,) or targets.shape != (n,):
            raise ValueError(f"actions and targets must be ({n},), got {actions.shape} and {targets.shape}")
        w = None if weights is None else self._check_weights(weights, n)
        self._set_batch(n)
        blobs = self.net.blobs
        blobs["data"].data[...] = states
        self.net.clear_param_diffs()  # Caffe accumulates parameter gradients
        if error_clip > 0:
            loss = self._clipped_backward(actions, targets.astype(np.float32), np.float32(error_clip), w)
        else:
            mask = self._eye[actions] if w is None else self._eye[actions] * np.sqrt(w)[:, None]
            blobs["action_mask"].data[...] = mask
            np.multiply(mask, targets.astype(np.float32)[:, None], out=blobs["target"].data)
            loss = float(self.net.forward()["loss"])
            self.td_errors = targets.astype(np.float32) - self.net.blobs[Q_BLOB].data[np.arange(n), actions]
            self.net.backward()
        for p, arr in zip(self.spec.params, self._diff):
            self._grad[p.offset:p.offset + p.size] = arr.reshape(-1)
        return loss, self._grad

    @staticmethod
    def _check_weights(weights: np.ndarray, n: int) -> np.ndarray:
        """``weights`` as (n,) float32, or ValueError unless they are n finite real numbers ≥ 0."""
        w = np.asarray(weights)
        real = np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)
        if w.shape != (n,) or not real:
            raise ValueError(f"weights must be ({n},) real numbers, got {w.dtype} of shape {w.shape}")
        w = w.astype(np.float32)
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("weights must be finite and >= 0")
        return w

    def _clipped_backward(self, actions: np.ndarray, targets: np.ndarray, clip: np.float32,
                          weights: np.ndarray | None) -> float:
        """Forward to Q, set dL/dQ = w·clip(Q − y, −c, c)/B on the taken actions (w = 1 without ``weights``),
        backward from there."""
        n = len(actions)
        self.net.forward(end=self.spec.q_layer)
        q = self.net.blobs[Q_BLOB]
        err = q.data[np.arange(n), actions] - targets
        self.td_errors = -err
        absr = np.abs(err)
        huber = np.where(absr <= clip, 0.5 * err**2, clip * (absr - 0.5 * clip))
        clipped = np.clip(err, -clip, clip)
        if weights is not None:
            huber, clipped = weights * huber, weights * clipped
        q.diff[...] = 0
        q.diff[np.arange(n), actions] = clipped / n
        self.net.backward(start=self.spec.q_layer)
        return float(huber.mean())


def bellman_targets(target_net: QNetwork, rewards: np.ndarray, next_states: np.ndarray,
                    terminals: np.ndarray, gamma: float, online_net: QNetwork | None = None,
                    steps: np.ndarray | None = None) -> np.ndarray:
    """y_j = r_j (terminal) or r_j + γ·max_a′ Q̂(φ_{j+1}, a′) — the slides' step 6.

    With ``online_net`` the Double-DQN target r_j + γ·Q̂(φ_{j+1}, argmax_a′ Q(φ_{j+1}, a′)) is used. With
    ``steps`` (n-step returns: r_j is the discounted sum of that many rewards, φ_{j+1} the state after them) the
    bootstrap is discounted by γ^steps_j.
    Shapes: rewards, terminals, steps (B,); next_states (B, C, H, W) uint8 → (B,) float32.
    """
    q_next = target_net.q_values(next_states)
    if online_net is None:
        best = q_next.max(axis=1)
    else:
        best = q_next[np.arange(len(q_next)), online_net.q_values(next_states).argmax(axis=1)]
    alive = 1.0 - terminals.astype(np.float32)
    discount = np.float32(gamma) if steps is None else np.float32(gamma) ** steps.astype(np.float32)
    return (rewards.astype(np.float32) + discount * alive * best).astype(np.float32)
