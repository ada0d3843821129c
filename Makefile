# ddqn — one install recipe, shared by `make test`, CI (.ci/run) and docker/Dockerfile.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages real Caffe needs to build (CPU), and Java for Spark.
DEB_PACKAGES := build-essential cmake libboost-system-dev libboost-thread-dev libboost-filesystem-dev \
  libboost-python-dev libboost-regex-dev libprotobuf-dev protobuf-compiler libgoogle-glog-dev \
  libgflags-dev libhdf5-dev liblmdb-dev libleveldb-dev libsnappy-dev libopenblas-dev libgtest-dev \
  openjdk-17-jre-headless

.PHONY: install deb-deps venv caffe test bench-caffe clean
install: deb-deps $(VENV)/.deps-ok caffe  ## everything: Debian packages, .venv, ddqn, real pycaffe

deb-deps:  ## install missing Debian packages (no-op when all are present)
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[install] Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing \
	  || { echo "install: error: apt-get could not install: $$missing" >&2; exit 1; }; \
	fi

$(VENV)/bin/python:
	@[ -n "$(PYTHON)" ] || { echo "install: error: python3.11 not found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps-ok: setup.py | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

caffe: $(VENV)/.deps-ok  ## build (or reuse the cached) real pycaffe and link it into .venv
	$(PY) -m ddqn.caffe_build

test: install  ## the README's test command
	$(PY) -m pytest -q tests

bench-caffe: install  ## forward+backward ms (batch 32, one thread) for the three model sizes
	$(PY) -m ddqn.bench.caffe_speed

clean:
	rm -rf $(VENV) .pytest_cache
