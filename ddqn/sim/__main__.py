"""``python -m ddqn.sim``."""
import sys

from ddqn.errors import run_command
from ddqn.sim.cli import main

if __name__ == "__main__":  # not in the spawned processes that measure service times
    sys.exit(run_command("python -m ddqn.sim", lambda: main()))
