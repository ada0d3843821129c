"""The one experience loop: game → φ → ε-greedy action → replay → minibatch gradient.

The slides' "Serial deep Q-learning" box, steps 1–7, for one game. Serial training and every distributed
worker run this same loop; what differs is what happens to a gradient (step 7): the serial trainer applies
it to θ, a worker pushes it to the parameter server. Resetting Q̂ (step 8) is the owner of θ's job.

    loop = ExperienceLoop(cfg, q, q_hat, replay, rng, env_seed, env_steps=0)
    loop.warm_up(n)            # the random-policy fill of D
    while ...:
        if loop.step():        # 1-4: act, execute, φ, store; True when a gradient is due
            loss, grad = loop.gradient()   # 5-7: sample D, targets from Q̂, loss and ∇θ (and D's priorities)

Lives (Atari): with ``life_loss_terminal`` a lost life is stored as a terminal transition and starts a new replay
segment and a new φ at the frame after the loss, while the game (and its episode: score, count) goes on until game
over or truncation; the rules live in :mod:`ddqn.replay.transition`, shared with the random warm-up.

Prioritized replay (``replay_alpha`` > 0; Schaul et al. 2016): step 5 draws by priority with importance weights of
exponent β, annealed linearly from ``replay_beta`` to 1 over this game's first ``replay_beta_steps`` env steps, step
7 weights each sample's loss by them, and the minibatch's |TD errors| become its transitions' priorities. Serial
training, every distributed worker and every simulated worker run it through this loop.
"""
from __future__ import annotations

import numpy as np

from ddqn.config import Config
from ddqn.dqn.exploration import Exploration, exploration
from ddqn.dqn.phases import NO_CLOCK, PhaseClock
from ddqn.dqn.qlearning import dqn_gradient, epsilon_greedy
from ddqn.game import make_env
from ddqn.game.frames import FrameStack
from ddqn.net.qnet import QNetwork
from ddqn.replay import LMDBReplayMemory, ReplayMemory
from ddqn.replay.fill import fill_random
from ddqn.replay.transition import store_step


class ExperienceLoop:
    """One game, its frame stack φ, the replay memory D and the ε schedule, acting with Q.

    Args:
        cfg: the run configuration (game, ε schedule, γ, ``train_every``, Double DQN, error clipping, prioritized
            replay's α and β schedule).
        q, q_hat: the online network Q (acts, gets the gradient) and the target network Q̂ (targets).
        replay: D; this loop adds every transition it plays.
        rng: draws the ε-greedy choices.
        env_seed: seed of the game's first reset.
        env_steps: steps this game's ε schedule has already run (a resumed or rejoining worker continues).
        clock: charges each step's time to its phase (``ddqn.dqn.phases``; by default nothing is timed).
        explore: this actor's ε schedule (``ddqn.dqn.exploration``; by default the config's for one worker). A
            distributed worker sets :attr:`run_steps` from the server's update count as replies arrive.
    """

    def __init__(self, cfg: Config, q: QNetwork, q_hat: QNetwork, replay: ReplayMemory | LMDBReplayMemory,
                 rng: np.random.Generator, env_seed: int, env_steps: int = 0, clock: PhaseClock = NO_CLOCK,
                 explore: Exploration | None = None) -> None:
        self.cfg, self.q, self.q_hat, self.replay, self.rng, self.clock = cfg, q, q_hat, replay, rng, clock
        history, frame_size, _ = q.spec.state_shape
        self.env = make_env(cfg, frame_size)
        self.frames = FrameStack(history)
        self.explore = explore or exploration(cfg)
        self.env_steps = env_steps  # this game's steps: the per-worker ε schedule's position, train_every's count
        self.run_steps: int | None = None  # the run's env steps as the server counts them (None: this game's)
        self.episodes = 0  # finished in this loop
        self.scores: list[int] = []  # of episodes finished since the last take_scores()
        self._env_seed = env_seed
        self.phi: np.ndarray | None = None  # current state, (history, H, W) uint8

    def warm_up(self, transitions: int) -> int:
        """Fill D with at least ``transitions`` random-policy transitions (whole episodes); returns the count."""
        if transitions <= 0:
            return 0
        return fill_random(self.replay, transitions, self.cfg, self.q.spec.state_shape[1], self._env_seed)

    def _new_episode(self, seed: int | None = None) -> None:
        frame, _ = self.env.reset(seed=seed)
        self.replay.start_episode(frame)
        self.phi = self.frames.reset(frame)

    def step(self) -> bool:
        """Steps 1–4 of one env step; returns True when a gradient is due (every ``train_every`` steps)."""
        if self.phi is None:
            self._new_episode(self._env_seed)
        eps = self.current_epsilon
        a = epsilon_greedy(self.q, self.phi, eps, self.rng)  # 1. ε-greedy action
        self.clock.lap("act")
        frame, r, terminated, truncated, info = self.env.step(a)  # 2. execute, observe r and x'
        self.clock.lap("env step")
        self.phi = self.frames.push(frame)  # 3. φ' from the last frames
        if store_step(self.replay, self.cfg, a, r, frame, terminated, truncated,  # 4. store the transition in D
                      info.get("life_lost", False)):
            self.phi = self.frames.reset(frame)  # a lost life: φ restarts with D's new segment
        self.env_steps += 1
        if terminated or truncated:
            self.episodes += 1
            self.scores.append(int(info["score"]))
            self._new_episode()
        self.clock.lap("store")
        return self.env_steps % self.cfg.train_every == 0

    def gradient(self) -> tuple[float, np.ndarray]:
        """Steps 5–7: a minibatch from D (``n_step``-step returns; uniform, or by priority with importance weights),
        targets from Q̂, then (loss, ∇θ flat float32, owned by Q); by priority, the sampled transitions' priorities
        become their |TD errors|."""
        cfg = self.cfg
        prioritized = cfg.replay_alpha > 0
        if prioritized:  # 5. sample D: by priority, importance weights of exponent β(t)
            batch = self.replay.sample(self.q.spec.batch_size, cfg.n_step, cfg.gamma, beta=self.current_beta)
        else:  # 5. sample D: uniform
            batch = self.replay.sample(self.q.spec.batch_size, cfg.n_step, cfg.gamma)
        self.clock.lap("replay sample")
        loss_grad = dqn_gradient(self.q, self.q_hat, batch, cfg.gamma,  # 6-7. targets, gradient
                                 double_dqn=cfg.double_dqn, error_clip=cfg.error_clip, weighted=prioritized,
                                 clock=self.clock)
        if prioritized:  # the sampled transitions' new priorities |δ| + eps
            self.replay.update_priorities(batch.index, np.abs(self.q.td_errors))
            self.clock.lap("replay sample")
        return loss_grad

    @property
    def current_beta(self) -> float:
        """β of prioritized replay's importance weights for the next minibatch: ``replay_beta`` annealed linearly to
        1 over this game's first ``replay_beta_steps`` env steps."""
        b0 = self.cfg.replay_beta
        return min(1.0, b0 + self.env_steps * (1.0 - b0) / self.cfg.replay_beta_steps)

    @property
    def current_epsilon(self) -> float:
        """ε for the next step."""
        return self.explore(self.env_steps, self.env_steps if self.run_steps is None else self.run_steps)

    def take_scores(self) -> list[int]:
        """Scores of the episodes finished since the last call."""
        scores, self.scores = self.scores, []
        return scores
