"""Snake on an n×n walled board, seen as one grayscale frame (the game of Ong, Chavez, Hong 2015).

Rules: the snake starts with length 2 in the middle heading east (head at (n//2, n//2), body just
west of it). Actions 0..3 move north, south, east, west; an action that reverses into the neck keeps
the current heading. One apple at a time sits on a uniformly random empty cell; eating it gives +1,
grows the snake by one (the tail stays put that step) and places a new apple. Hitting a wall or the
body gives -1 and ends the episode (``terminated``); moving into the cell the tail leaves this very
step is legal. Filling the board is a win (``terminated``, no apple can be placed). After
``max_steps_without_apple`` steps without eating the episode is cut (``truncated``, "starved").
On death the board is left as it was before the fatal move. Observation: one (F, F) uint8 frame,
empty 0, body 200, head 100 (200 with ``paper_look``), apple 255; the board either scaled over the whole frame
by nearest neighbour (``layout="scaled"``, the default) or drawn one k×k block per cell inside a wall of 50
(``layout="cells"``; see :func:`frame_map`).

:class:`SnakeEnv` is the readable one-game reference (a Gymnasium env, id ``ddqn/Snake-v0``);
:class:`SnakeBatch` steps K games at once in numpy with same-step autoreset. Game i of a batch
reset with seed s plays exactly like ``SnakeEnv().reset(seed=game_seeds(s, K)[i])``.
"""
from __future__ import annotations

import operator
from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from ddqn.config import FRAME_LAYOUTS as LAYOUTS
from ddqn.game.seeds import game_seeds

NORTH, SOUTH, EAST, WEST = 0, 1, 2, 3
ACTION_NAMES = ("north", "south", "east", "west")
DELTAS = np.array([(-1, 0), (1, 0), (0, 1), (0, -1)])  # (d_row, d_col) per action
OPPOSITE = np.array([SOUTH, NORTH, WEST, EAST])
# Board encoding (int8 codes of an (n, n) board) and the pixel value of each code in a frame.
CELL_EMPTY, CELL_BODY, CELL_HEAD, CELL_APPLE, CELL_WALL = 0, 1, 2, 3, 4  # CELL_WALL: off the board (frames only)
EMPTY, BODY, HEAD, APPLE, WALL = 0, 200, 100, 255, 50
RGB = np.array([(25, 25, 25), (40, 170, 70), (240, 210, 60), (220, 40, 40)], np.uint8)
ENV_ID = "ddqn/Snake-v0"


def pixel_table(paper_look: bool = False) -> np.ndarray:
    """uint8 (5,) pixel value per cell code (4: the wall around the board); ``paper_look`` draws the head like the
    body."""
    return np.array([EMPTY, BODY, BODY if paper_look else HEAD, APPLE, WALL], np.uint8)


def frame_map(n: int, frame_size: int, layout: str = "scaled") -> np.ndarray:
    """(F, F) int64: the flat board cell (row·n + col) that each frame pixel shows, or n·n for the wall.

    ``"scaled"``: pixel (i, j) shows cell (⌊i·n/F⌋, ⌊j·n/F⌋), the board stretched over the whole frame (F may be
    < or > n; when F is not a multiple of n the cells come out 1 or 2 pixels wide, e.g. 10 cells on 16 pixels).
    ``"cells"``: every cell is k×k pixels with k = ⌊F/(n + 2)⌋, the board centred and everything around it wall,
    so a wall at least one cell thick is visible on each side (needs F ≥ n + 2).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "scaled":
        src = np.arange(frame_size) * n // frame_size
        return src[:, None] * n + src[None, :]
    k = frame_size // (n + 2)
    if k < 1:
        raise ValueError(f"the 'cells' layout of a {n}x{n} board needs a frame of at least {n + 2} pixels, "
                         f"got {frame_size}")
    pos = np.arange(frame_size) - (frame_size - k * n) // 2
    inside = (pos >= 0) & (pos < k * n)
    cell = np.where(inside, pos, 0) // k
    return np.where(inside[:, None] & inside[None, :], cell[:, None] * n + cell[None, :], n * n)


def draw_frames(pixels: np.ndarray, cells: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """Flat frames (..., F·F) uint8 of flat boards ``cells`` (..., n·n) of cell codes, seen through ``pixel_map``
    (a raveled :func:`frame_map`; index n·n, the wall, is drawn as :data:`CELL_WALL`) in ``pixels``
    (:func:`pixel_table`). take() is faster than fancy indexing."""
    if pixel_map.max() == cells.shape[-1]:  # the layout shows a wall
        cells = np.concatenate([cells, np.full((*cells.shape[:-1], 1), CELL_WALL, cells.dtype)], axis=-1)
    return pixels.take(cells).take(pixel_map, axis=-1)


def render_frame(board: np.ndarray, frame_size: int, paper_look: bool = False, layout: str = "scaled") -> np.ndarray:
    """Frame (..., F, F) uint8 of a board (..., n, n) of cell codes, laid out as :func:`frame_map` says.

    Codes: 0 empty, 1 body, 2 head, 3 apple → pixels 0, 200, 100 (200 if ``paper_look``), 255; the wall is 50.
    """
    n = board.shape[-1]
    flat = draw_frames(pixel_table(paper_look), board.reshape(*board.shape[:-2], n * n),
                       frame_map(n, frame_size, layout).ravel())
    return flat.reshape(*board.shape[:-2], frame_size, frame_size)


def draw_apple(rng: np.random.Generator, free: np.ndarray) -> int:
    """Flat index of a uniformly random True cell of ``free`` (row-major), or -1 if none."""
    cells = np.flatnonzero(free)
    return int(cells[rng.integers(cells.size)]) if cells.size else -1


def _check_args(size: Any, frame_size: Any, max_steps: Any) -> int | None:
    """Validate constructor args; return the starvation limit (None = off)."""
    def is_int(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
    if not is_int(size) or size < 4:
        raise ValueError(f"size must be an int >= 4 (board too small for the snake otherwise), got {size!r}")
    if not is_int(frame_size) or frame_size < 1:
        raise ValueError(f"frame_size must be an int >= 1, got {frame_size!r}")
    if isinstance(max_steps, str) and max_steps == "auto":
        return 4 * int(size) * int(size)
    if max_steps is not None and (not is_int(max_steps) or max_steps <= 0):
        raise ValueError(f"max_steps_without_apple must be an int > 0, None or 'auto', got {max_steps!r}")
    return None if max_steps is None else int(max_steps)


def board_from(size: int, body: Sequence[tuple[int, int]], apple: tuple[int, int] | None) -> np.ndarray:
    """(size, size) int8 board of a snake (cells head first, each next to the previous) and apple."""
    board = np.zeros((size, size), np.int8)
    if len(body) < 2 or len(set(body)) != len(body):
        raise ValueError(f"body must have >= 2 distinct cells, got {body!r}")
    for k, (r, c) in enumerate(body):
        if not (0 <= r < size and 0 <= c < size):
            raise ValueError(f"body cell {(r, c)} is off the board")
        if k and abs(r - body[k - 1][0]) + abs(c - body[k - 1][1]) != 1:
            raise ValueError(f"body cells {body[k - 1]} and {(r, c)} are not adjacent")
        board[r, c] = CELL_BODY
    board[body[0]] = CELL_HEAD
    if apple is not None:
        if not (0 <= apple[0] < size and 0 <= apple[1] < size) or board[apple] != CELL_EMPTY:
            raise ValueError(f"apple {apple!r} must be on an empty board cell")
        board[apple] = CELL_APPLE
    return board


def heading_of(body: Sequence[tuple[int, int]]) -> int:
    """Action whose move goes from the neck ``body[1]`` to the head ``body[0]``."""
    d = (body[0][0] - body[1][0], body[0][1] - body[1][1])
    return [tuple(x) for x in DELTAS.tolist()].index(d)


class SnakeEnv(gymnasium.Env):
    """One game of Snake; observation (frame_size, frame_size) uint8, actions Discrete(4)."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 8}

    def __init__(self, size: int = 10, frame_size: int = 16, max_steps_without_apple: int | None | str = "auto",
                 paper_look: bool = False, render_mode: str | None = None, layout: str = "scaled") -> None:
        self.max_steps = _check_args(size, frame_size, max_steps_without_apple)
        self._map = frame_map(int(size), int(frame_size), layout).ravel()  # frame pixel -> cell (n*n: wall)
        self._pixels = pixel_table(paper_look)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.size, self.frame_size, self.paper_look = int(size), int(frame_size), bool(paper_look)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (self.frame_size, self.frame_size), np.uint8)
        self.action_space = spaces.Discrete(4)
        self.board = np.zeros((self.size, self.size), np.int8)  # cell codes, see render_frame
        self.body: deque[tuple[int, int]] = deque()  # head first
        self.heading, self.score, self.steps_since_apple, self.over = EAST, 0, 0, True

    def set_state(self, body: Sequence[tuple[int, int]], apple: tuple[int, int] | None, score: int = 0) -> None:
        """Put the game in a given state (head first; heading from head and neck); for tests/demos."""
        self.board = board_from(self.size, body, apple)
        self.body = deque((int(r), int(c)) for r, c in body)
        self.heading, self.score, self.steps_since_apple, self.over = heading_of(body), score, 0, False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        m = self.size // 2
        self.set_state([(m, m), (m, m - 1)], None)
        self.board.flat[draw_apple(self.np_random, self.board.ravel() == CELL_EMPTY)] = CELL_APPLE
        return self.board_frame(), self._info(False, False, False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = operator.index(action)
        if not 0 <= a < 4:
            raise ValueError(f"action must be in 0..3, got {action!r}")
        if self.over:
            raise RuntimeError("episode is over (or never started): call reset()")
        if a != OPPOSITE[self.heading]:
            self.heading = a
        (hr, hc), (dr, dc) = self.body[0], DELTAS[self.heading]
        new = (int(hr + dr), int(hc + dc))
        off = not (0 <= new[0] < self.size and 0 <= new[1] < self.size)
        if off or (self.board[new] == CELL_BODY and new != self.body[-1]):
            self.over = True
            return self.board_frame(), -1.0, True, False, self._info(True, False, False, wall=off)
        eat = self.board[new] == CELL_APPLE
        if not eat:
            self.board[self.body.pop()] = CELL_EMPTY
        self.board[hr, hc], self.board[new] = CELL_BODY, CELL_HEAD
        self.body.appendleft(new)
        win = False
        if eat:
            self.score, self.steps_since_apple = self.score + 1, 0
            cell = draw_apple(self.np_random, self.board.ravel() == CELL_EMPTY)
            win = cell < 0
            if not win:
                self.board.flat[cell] = CELL_APPLE
        else:
            self.steps_since_apple += 1
        starved = not win and self.max_steps is not None and self.steps_since_apple >= self.max_steps
        self.over = win or starved
        return self.board_frame(), float(eat), win, starved, self._info(False, starved, win)

    def _info(self, death: bool, starved: bool, win: bool, wall: bool = False) -> dict[str, Any]:
        """The step's info: score so far; whether it died (``wall``: into a wall, else into its body), starved, won."""
        return {"score": self.score, "death": death, "wall": wall, "starved": starved, "win": win}

    def board_frame(self) -> np.ndarray:
        """The observation: (frame_size, frame_size) uint8 frame of the current board."""
        return draw_frames(self._pixels, self.board.ravel(), self._map).reshape(self.frame_size, self.frame_size)

    def render(self) -> np.ndarray | str | None:
        """rgb_array: (16n, 16n, 3) uint8 image; ansi: text board ('@' head, 'o' body, '*' apple)."""
        if self.render_mode == "rgb_array":
            return np.repeat(np.repeat(RGB[self.board], 16, axis=0), 16, axis=1)
        if self.render_mode == "ansi":
            rows = ["".join(".o@*"[v] for v in row) for row in self.board]
            wall = "#" * (self.size + 2)
            return "\n".join([wall, *(f"#{r}#" for r in rows), wall, f"score {self.score}"]) + "\n"
        gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'ansi'")
        return None


class SnakeBatch:
    """K games of Snake stepped together in numpy; finished games restart in the same step."""

    num_actions = 4  # north, south, east, west

    def __init__(self, num_envs: int, size: int = 10, frame_size: int = 16,
                 max_steps_without_apple: int | None | str = "auto", paper_look: bool = False,
                 layout: str = "scaled") -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        self.max_steps = _check_args(size, frame_size, max_steps_without_apple)
        self.num_envs, self.size, self.frame_size = int(num_envs), int(size), int(frame_size)
        k, cells = self.num_envs, self.size * self.size
        self._gather = frame_map(self.size, self.frame_size, layout).ravel()  # frame pixel -> cell (n*n: wall)
        self._pixels = pixel_table(paper_look)
        self._rows = np.arange(k)
        self.board = np.zeros((k, cells), np.int8)  # flat cell codes per game
        self.ring = np.zeros((k, cells), np.int64)  # snake cells, head at ring[head_ptr], tail behind
        self.head_ptr, self.length = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.heading, self.score = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.steps_since_apple = np.zeros(k, np.int64)
        self.rngs: list[np.random.Generator] = []

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start all games; (K, F, F) uint8 frames. A seed re-seeds every game (see game_seeds)."""
        if seed is not None or not self.rngs:
            self.rngs = [seeding.np_random(s)[0] for s in game_seeds(seed, self.num_envs)]
        self._restart(self._rows)
        return self.frames()

    def set_game(self, i: int, body: Sequence[tuple[int, int]], apple: tuple[int, int] | None,
                 score: int = 0) -> None:
        """Put game i in a given state (cells head first); for tests/demos."""
        self.board[i] = board_from(self.size, body, apple).ravel()
        n = len(body)
        self.ring[i, :n] = [r * self.size + c for r, c in reversed(body)]
        self.head_ptr[i], self.length[i], self.heading[i] = n - 1, n, heading_of(body)
        self.score[i], self.steps_since_apple[i] = score, 0

    def _restart(self, games: np.ndarray) -> None:
        """Reset the given games to the start state and place their apples."""
        m = self.size // 2
        self.board[games] = CELL_EMPTY
        self.board[games, m * self.size + m - 1], self.board[games, m * self.size + m] = CELL_BODY, CELL_HEAD
        self.ring[games, 0], self.ring[games, 1] = m * self.size + m - 1, m * self.size + m
        self.head_ptr[games], self.length[games], self.heading[games] = 1, 2, EAST
        self.score[games], self.steps_since_apple[games] = 0, 0
        free = np.flatnonzero(self.board[games[0]] == CELL_EMPTY)  # the same for every fresh game
        for i in games:  # the draw of draw_apple, without recomputing the free cells per game
            self.board[i, free[self.rngs[i].integers(free.size)]] = CELL_APPLE

    def frames(self) -> np.ndarray:
        """(K, F, F) uint8 frames of the current boards."""
        return self._render(self.board)

    def _render(self, boards: np.ndarray) -> np.ndarray:
        """(k, F, F) uint8 frames of flat boards (k, n*n)."""
        return draw_frames(self._pixels, boards, self._gather).reshape(-1, self.frame_size, self.frame_size)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance all games by one action (K,) int in 0..3.

        Returns frames (K,F,F) uint8 (new episode's first frame for finished games), rewards (K,)
        float32, terminated (K,) bool, truncated (K,) bool and info: "final_frame" (K,F,F) (valid
        where terminated|truncated), "score" (K,) int (episode score of finished games), and
        "death", "wall" (a death into a wall, not the body), "starved", "win" (K,) bool.
        """
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu" or ((a < 0) | (a > 3)).any():
            raise ValueError(f"actions must be an int array of shape ({self.num_envs},) with values in 0..3")
        if not self.rngs:
            raise RuntimeError("call reset() before step()")
        rows, n, cap = self._rows, self.size, self.size * self.size
        self.heading = np.where(a == OPPOSITE[self.heading], self.heading, a)
        head = self.ring[rows, self.head_ptr]
        r, c = head // n + DELTAS[self.heading, 0], head % n + DELTAS[self.heading, 1]
        wall = (r < 0) | (r >= n) | (c < 0) | (c >= n)
        new = np.where(wall, 0, r * n + c)
        target = self.board[rows, new]
        tail = self.ring[rows, (self.head_ptr - self.length + 1) % cap]
        death = wall | ((target == CELL_BODY) & (new != tail))
        eat = ~death & (target == CELL_APPLE)
        move, shrink = np.flatnonzero(~death), np.flatnonzero(~death & ~eat)
        self.board[shrink, tail[shrink]] = CELL_EMPTY
        self.board[move, head[move]] = CELL_BODY
        self.board[move, new[move]] = CELL_HEAD
        self.head_ptr[move] = (self.head_ptr[move] + 1) % cap
        self.ring[move, self.head_ptr[move]] = new[move]
        self.length += eat
        self.score += eat
        self.steps_since_apple = np.where(eat, 0, self.steps_since_apple + 1)
        win = np.zeros(self.num_envs, bool)
        for i in np.flatnonzero(eat):  # rare: one draw from game i's own generator
            cell = draw_apple(self.rngs[i], self.board[i] == CELL_EMPTY)
            win[i] = cell < 0
            if cell >= 0:
                self.board[i, cell] = CELL_APPLE
        starved = np.zeros(self.num_envs, bool) if self.max_steps is None else \
            ~death & ~win & (self.steps_since_apple >= self.max_steps)
        terminated = death | win
        frames = self.frames()
        info = {"final_frame": frames.copy(), "score": self.score.copy(), "death": death, "wall": wall,
                "starved": starved, "win": win}
        done = np.flatnonzero(terminated | starved)
        if done.size:
            self._restart(done)
            frames[done] = self._render(self.board[done])
        return frames, (eat.astype(np.float32) - death), terminated, starved, info


def _register() -> None:
    """Register ``ddqn/Snake-v0`` with Gymnasium once (a re-import or second call is a no-op)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="ddqn.game.snake:SnakeEnv")


_register()
