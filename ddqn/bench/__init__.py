"""Benchmarks (not tests): each measures, prints its headline figures and writes results/<name>.json.

``python -m ddqn.bench.<name>``; what they share lives in ``ddqn.bench.common``, and no benchmark imports another.
"""
