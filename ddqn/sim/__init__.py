"""A discrete-event simulator of W asynchronous workers and one parameter server, learning for real.

Everything learning depends on is real: each simulated worker plays its own game with its own replay memory,
ε schedule and seeds through the same :class:`~ddqn.dqn.loop.ExperienceLoop` as a real worker, every gradient is
computed by real pycaffe on the θ that worker last fetched, and the server applies it with the real
:class:`~ddqn.distributed.store.ParameterStore` (Caffe-exact solver, θ⁻ ← θ every C updates, staleness controls).
Only time is simulated: a worker's compute costs the seconds it really took here (one core per worker of this
machine), a message costs measured transport and server service times, and the server is one FIFO thread.

Modules: :mod:`~ddqn.sim.events` (the clock), :mod:`~ddqn.sim.service` (server service times, measured),
:mod:`~ddqn.sim.timing` (transport model, fixed table), :mod:`~ddqn.sim.messages`, :mod:`~ddqn.sim.server`,
:mod:`~ddqn.sim.worker`, :mod:`~ddqn.sim.run` (a run and its outputs), :mod:`~ddqn.sim.shards` (a sharded server:
S shard threads, PUSH/vote/COMMIT, placement), :mod:`~ddqn.sim.timing_only` (no Caffe, no learning: fixed cycles
and byte counts), :mod:`~ddqn.sim.cli`.
"""
