"""φ: the last ``history`` frames of a game stacked into one state (the slides' preprocessing)."""
from __future__ import annotations

import numpy as np


class FrameStack:
    """The last ``history`` frames as one (history, H, W) uint8 state φ (oldest first)."""

    def __init__(self, history: int = 4) -> None:
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, got {history!r}")
        self.history = history
        self._buf: np.ndarray | None = None

    def reset(self, frame: np.ndarray) -> np.ndarray:
        """Start a new episode: the first frame repeated; returns a (history, H, W) uint8 copy."""
        self._buf = np.repeat(np.asarray(frame, np.uint8)[None], self.history, axis=0)
        return self._buf.copy()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Append a frame, dropping the oldest; returns a (history, H, W) uint8 copy."""
        if self._buf is None:
            raise RuntimeError("call reset(frame) before push(frame)")
        if np.shape(frame) != self._buf.shape[1:]:
            raise ValueError(f"frame shape {np.shape(frame)} != {self._buf.shape[1:]}")
        self._buf[:-1] = self._buf[1:]
        self._buf[-1] = frame
        return self._buf.copy()
