"""Replay memory D: frames stored once, transitions sampled uniformly (RAM or LMDB), and the random warm-up."""
