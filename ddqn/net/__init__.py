"""The Q-network in real Caffe: building pycaffe, the prototxt's layout, forward/backward, snapshots."""
