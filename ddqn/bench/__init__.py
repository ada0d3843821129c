"""Benchmarks (not tests): each measures, prints its headline figures and writes results/<name>.json.

``python -m ddqn.bench.<name>``; what they share lives in ``ddqn.bench.common``, ``ddqn.bench.runs``
(the learning benches' training runs), ``ddqn.bench.stats`` and ``ddqn.bench.sim_runs``, and no benchmark imports
another.
"""
