"""``python -m ddqn.bench.report``: regenerate results/REPORT.md (:func:`ddqn.bench.report.main`)."""
from ddqn.bench.report import main

main()
