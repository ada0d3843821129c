"""Caffe-exact solvers (SGD, AdaGrad, RMSProp, Adam) on the flat θ, read from Caffe solver prototxt."""
