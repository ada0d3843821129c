"""Caffe-exact solvers (SGD, AdaGrad, RMSProp) on the flat θ, read from Caffe solver prototxt."""
