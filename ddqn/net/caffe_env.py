"""Import real pycaffe with the process settings ddqn relies on.

The BLAS is limited to one thread per process (workers are processes): OpenBLAS by ``OPENBLAS_NUM_THREADS``,
MKL (``make install BLAS=mkl``) by its sequential layer, and so is oneDNN, which runs Caffe's convolutions on GNU
OpenMP, by ``OMP_NUM_THREADS`` (numba's thread pool, which the parameter server sizes itself, does not read it);
each can be overridden from the environment. glog is
limited to warnings and errors. OpenBLAS's kernel is checked (:mod:`ddqn.net.blas_core`): on a CPU it does not
know it would run a generic core, so ``OPENBLAS_CORETYPE`` names the right one unless the environment already
does. All must be set before ``_caffe.so`` loads, so every module that needs Caffe gets it through :func:`caffe`.
"""
from __future__ import annotations

import os
from types import ModuleType

from ddqn.errors import DDQNError
from ddqn.net.blas_core import select_core

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
select_core()


def caffe() -> ModuleType:
    """Return the ``caffe`` module in CPU mode, or raise a one-line error if pycaffe is missing."""
    try:
        import caffe as _caffe  # noqa: PLC0415 - deferred so the env above is set first
    except ImportError as exc:
        raise DDQNError(f"pycaffe is not importable ({exc}); run `make install`") from exc
    _caffe.set_mode_cpu()
    return _caffe


def caffe_pb2() -> ModuleType:
    """Return Caffe's protobuf messages (``caffe.proto.caffe_pb2``)."""
    caffe()
    from caffe.proto import caffe_pb2 as pb2  # noqa: PLC0415

    return pb2
