"""ddqn: distributed deep Q-learning (Ong, Chavez, Hong 2015) on Spark and real Caffe."""

__version__ = "0.1.0"
