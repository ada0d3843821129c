"""Distributed deep Q-learning on Spark: wire protocol, parameter server, workers, driver, cluster."""
