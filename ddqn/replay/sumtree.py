"""A sum tree over ``capacity`` non-negative leaves: O(log n) updates and prefix-sum search, vectorised in numpy.

Prioritized replay (Schaul et al. 2016, "Prioritized Experience Replay", proportional variant) draws leaf i with
probability v_i / Σ v: a uniform u in [0, Σ v) picks the leaf whose prefix-sum interval [Σ_{j<i} v_j, Σ_{j≤i} v_j)
holds u, found by one descent from the root. Both the descent and the updates run level by level over a whole
batch of leaves at once (numpy, no Python loop over the batch).

Layout: a complete binary tree in one float64 array ``tree`` of 2P nodes, P the smallest power of two ≥ capacity;
node k has children 2k and 2k + 1, the root is node 1, leaf i is node P + i, and the P − capacity padding leaves
stay 0. An update writes the leaves, then recomputes each ancestor as the sum of its two children (never by
adding a delta), so a node's value depends only on the leaves below it, whatever order the updates came in.
"""
from __future__ import annotations

import numpy as np


class SumTree:
    """Sums of ``capacity`` leaves (float64, ≥ 0, initially 0): :meth:`update`, :attr:`total`, :meth:`find`."""

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self._depth = (self.capacity - 1).bit_length()  # levels below the root
        self._leaf0 = 1 << self._depth                   # P: node number of leaf 0
        self.tree = np.zeros(2 * self._leaf0, np.float64)

    @property
    def total(self) -> float:
        """Σ of all leaves (the root)."""
        return float(self.tree[1])

    def leaves(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The values of leaves ``idx`` (any int shape; all leaves if None), a copy."""
        if idx is None:
            return self.tree[self._leaf0:self._leaf0 + self.capacity].copy()
        return self.tree[self._leaf0 + np.asarray(idx, np.int64)]

    def update(self, idx: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``idx`` (B,) to ``values`` (B,), finite and ≥ 0; a leaf named twice takes its last value."""
        idx = np.asarray(idx, np.int64).reshape(-1)
        values = np.asarray(values, np.float64).reshape(-1)
        if idx.shape != values.shape:
            raise ValueError(f"idx and values must have the same length, got {idx.shape} and {values.shape}")
        if len(idx) == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise ValueError(f"leaf indices must be in [0, {self.capacity}), got {idx.min()} .. {idx.max()}")
        if not np.all(np.isfinite(values)) or values.min() < 0:
            raise ValueError("leaf values must be finite and >= 0")
        if len(idx) > 1:  # keep each leaf's last value (numpy's repeated fancy assignment does not promise which)
            rev_first = np.unique(idx[::-1], return_index=True)[1]
            keep = len(idx) - 1 - rev_first
            idx, values = idx[keep], values[keep]
        node = idx + self._leaf0
        tree = self.tree
        tree[node] = values
        for _ in range(self._depth):  # each ancestor = left + right child, level by level up to the root
            node = node >> 1  # a parent named twice gets the same sum twice
            tree[node] = tree[2 * node] + tree[2 * node + 1]

    def find(self, u: np.ndarray) -> np.ndarray:
        """For each u (B,) in [0, total): the leaf i with Σ_{j<i} v_j ≤ u < Σ_{j≤i} v_j, (B,) int64.

        Never a zero leaf: where rounding puts u at or past the end of a subtree, the descent stays in the child
        that has mass, so every returned leaf has v_i > 0. ValueError if the total is 0.
        """
        if not self.tree[1] > 0:
            raise ValueError("cannot search a sum tree whose total is 0")
        u = np.array(u, np.float64).reshape(-1)
        node = np.ones(len(u), np.int64)
        tree = self.tree
        for _ in range(self._depth):
            left, right = tree[2 * node], tree[2 * node + 1]
            go_right = ((u >= left) & (right > 0)) | (left <= 0)
            u = np.where(go_right, u - left, u)
            node = 2 * node + go_right
        return node - self._leaf0
