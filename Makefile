# ddqn — one install recipe (`make install`), shared by `make test`, CI (.ci/run) and docker/Dockerfile.
SHELL := /bin/bash
# Supported Pythons: 3.11, 3.12 and 3.13 (setup.py's python_requires). Debian's own interpreter first (3.11.2 on
# Debian 12, 3.13.5 on Debian 13; what the Docker image has), even when a pyenv or conda python3 comes first on PATH.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(shell command -v python3))
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# spark-submit runs the driver and executors with the project's interpreter; Spark's own servers (web UI,
# RPC) bind to loopback, like the parameter server, since the local job is on this machine only
SPARK_ENV := PYSPARK_PYTHON=$(abspath $(PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY)) SPARK_LOCAL_IP=127.0.0.1
MINUTES ?= 30
WORKERS ?= 2
# The BLAS Caffe is built against: openblas (Debian's) or mkl (Intel MKL from PyPI); see ddqn/net/caffe_build.py.
BLAS ?= openblas

# Debian packages: Python's venv and headers, what real Caffe needs to build (CPU), and a Java for Spark 4 that the
# release ships, picked from /etc/os-release: Debian 12 (bookworm) has OpenJDK 17, Debian 13 (trixie) 21 (no 17).
OS_RELEASE ?= /etc/os-release
DEBIAN_VERSION := $(shell . $(OS_RELEASE) 2>/dev/null && [ "$$ID" = debian ] && echo $$VERSION_ID)
JAVA_PACKAGE_12 := openjdk-17-jre-headless
JAVA_PACKAGE_13 := openjdk-21-jre-headless
JAVA_PACKAGE := $(JAVA_PACKAGE_$(DEBIAN_VERSION))
DEB_PACKAGES := python3-venv python3-dev build-essential cmake libboost-system-dev libboost-thread-dev libboost-filesystem-dev \
  libboost-python-dev libboost-regex-dev libprotobuf-dev protobuf-compiler libgoogle-glog-dev \
  libgflags-dev libhdf5-dev liblmdb-dev libleveldb-dev libsnappy-dev libopenblas-dev libgtest-dev \
  $(JAVA_PACKAGE) iproute2

.PHONY: install deb-deps venv caffe torch-venv lint test test-hosts train train-serial train-cluster train-hosts test-caffe bench-caffe bench-env bench-replay \
  bench-ps bench-worker bench-capacity bench-hostile bench-links bench-links-shards bench-links-model bench-shard-cost bench-shard-cost-alone bench-shard-projection bench-scaling bench-scaling-120 bench-grad-norms bench-suite bench-blas bench-atari bench-scale-out bench-scale-out-paper bench-scale-projection bench-scale-staleness bench-scale-validate bench-tuning gifs report cluster-up cluster-train cluster-results cluster-down clean

install: deb-deps venv caffe  ## everything: Debian packages, .venv, ddqn, real pycaffe

deb-deps:  ## install missing Debian packages (no-op when all are present)
	@[ -n "$(JAVA_PACKAGE)" ] || { . $(OS_RELEASE) 2>/dev/null; echo "install: error: $${PRETTY_NAME:-this system} \
	is not supported (supported: Debian 12 and Debian 13; see docs/install.md)" >&2; exit 1; }
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[install] Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing \
	  || { echo "install: error: apt-get could not install: $$missing" >&2; exit 1; }; \
	fi

# "<real path> <version>" of an interpreter: a .venv made by another interpreter than $(PYTHON) is rebuilt.
WHICH_PY := import os, sys; print(os.path.realpath(sys._base_executable), sys.version.split()[0])

venv: deb-deps  ## .venv made by $(PYTHON) with ddqn and its dependencies (rebuilt if another Python made it)
	@[ -n "$(PYTHON)" ] || { echo "install: error: no python3 found (apt-get install python3)" >&2; exit 1; }
	@want=$$($(PYTHON) -c '$(WHICH_PY)') || { echo "install: error: $(PYTHON) does not run" >&2; exit 1; }; \
	case "$$want" in *" 3.11."*|*" 3.12."*|*" 3.13."*) ;; *) echo "install: error: $(PYTHON) is Python $${want##* }; \
	ddqn supports Python 3.11, 3.12 and 3.13 (make install PYTHON=/path/to/python3.13)" >&2; \
	  exit 1;; esac; \
	have=$$([ -x $(PY) ] && $(PY) -c '$(WHICH_PY)' 2>/dev/null); \
	if [ "$$want" != "$$have" ]; then \
	  [ ! -e $(VENV) ] || echo "[install] $(VENV) was made by '$${have:-an interpreter that no longer runs}'; rebuilding it with '$$want'"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) || { echo "install: error: $(PYTHON) -m venv failed" >&2; exit 1; }; \
	fi; \
	if [ ! -f $(VENV)/.deps-ok ] || [ setup.py -nt $(VENV)/.deps-ok ]; then \
	  $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]' && touch $(VENV)/.deps-ok; \
	fi

caffe: venv  ## build (or reuse the cached) real pycaffe against $(BLAS) and link it into .venv
	$(PY) -m ddqn.net.caffe_build --blas $(BLAS)

lint: venv  ## ruff (ruff.toml): style, import order, unused code
	$(PY) -m ruff check .

test: install lint  ## the README's test command (lint first, then the suite)
	$(PY) -m pytest -q --timeout=900 --durations=15 $(PYTEST_ARGS) tests

train: CONFIG ?= paper
train: install  ## the main job: distributed DQN on Spark (local[*,4]), paper settings (CONFIG: another named config or YAML), $(MINUTES) min
	$(SPARK_ENV) $(VENV)/bin/spark-submit spark_jobs/train.py --config $(CONFIG) --workers 2 --minutes $(MINUTES) --out runs/train

train-serial: install  ## the slides' serial algorithm, paper settings, $(MINUTES) min
	$(VENV)/bin/ddqn train --mode serial --config paper --minutes $(MINUTES) --out runs/serial

train-cluster: install  ## the same job on a Spark standalone cluster (master + 2 workers) on 127.0.0.1
	$(SPARK_ENV) $(PY) -m ddqn.distributed.cluster --workers 2 -- spark_jobs/train.py --config paper --workers 2 \
	  --minutes $(MINUTES) --out runs/train-cluster

# Network namespaces as hosts (ddqn/distributed/hosts.py): needs root, so sudo when not root; the run is then chowned back.
train-hosts: install  ## the same job on a multi-host cluster on this machine: master, driver and $(WORKERS) worker hosts as network namespaces
	$(SUDO) $(PY) -m ddqn.distributed.hosts --workers $(WORKERS) $(if $(LINK_GBIT),--link-gbit $(LINK_GBIT)) -- spark_jobs/train.py --config paper --workers $(WORKERS) \
	  --minutes $(MINUTES) --out runs/train-hosts
	$(if $(SUDO),$(SUDO) chown -R $$(id -u):$$(id -g) runs/train-hosts)

test-caffe: install  ## Caffe's own convolution, pooling and neuron (ReLU) layer tests (gradient checks included) against the patched build
	$(PY) -m ddqn.net.caffe_gtest

# Not part of `make test`: it builds the image (Caffe compiled inside) and trains on the compose cluster for minutes.
.PHONY: test-compose
test-compose: install  ## the compose cluster for real (tests/test_compose_cluster.py; root, sudo when not root): a Docker engine of its own, ddqn:local built, 2 workers train, a worker container killed, nothing left behind
	$(SUDO) $(PY) -m pytest -q -s --timeout=5400 -m compose tests/test_compose_cluster.py

test-hosts: install  ## only the multi-host tests (tests/test_hosts.py: network namespaces; sudo when not root)
	$(SUDO) $(PY) -m pytest -q --timeout=900 -m hosts tests/test_hosts.py

# The PyTorch twin bench-caffe times beside Caffe (ddqn/bench/torch_twin.py) lives in a virtualenv of its own: a peer,
# never ddqn's dependency. Only torch==2.13.0 (a CPU build of it lies on this machine's disk; any other torch request
# downloads several GB of CUDA).
# That file is built for Python 3.11, so the twin's virtualenv uses a Python 3.11; without one (Debian 13) the bench
# runs without the twin and says why.
TORCH_VENV := .venv-torch
TORCH_PIN := torch==2.13.0
TORCH_PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) $(shell command -v python3.11))

torch-venv: deb-deps  ## $(TORCH_VENV): the PyTorch twin's own virtualenv ($(TORCH_PIN) and numpy, Python 3.11), made when missing
	@[ -n "$(TORCH_PYTHON)" ] || { echo "[bench-caffe] no Python 3.11 for $(TORCH_PIN): the PyTorch twin is left out"; exit 0; }; \
	[ -f $(TORCH_VENV)/.deps-ok ] || { echo "[bench-caffe] $(TORCH_VENV): $(TORCH_PIN) and numpy"; \
	  rm -rf $(TORCH_VENV) && $(TORCH_PYTHON) -m venv $(TORCH_VENV) \
	  && $(TORCH_VENV)/bin/python -m pip install -q $(TORCH_PIN) numpy && touch $(TORCH_VENV)/.deps-ok; } \
	  || { echo "bench-caffe: error: could not install $(TORCH_PIN) in $(TORCH_VENV)" >&2; exit 1; }

# CAFFE_CANDIDATES: other builds of Caffe timed in the same run, each LABEL=DIR (DIR holds its caffe package).
# CAFFE_BASELINE: baseline builds timed beside, each a comma-separated list of the patches it leaves out
# (no-<name>+…; built once when missing, cached apart). The default is Caffe before the speed patches (issue 29):
# no oneDNN convolution, no max pooling or ReLU loop. CAFFE_BASELINE= leaves it out.
CAFFE_BASELINE ?= 0002-onednn-convolution.patch,0003-maxpool-forward.patch,0004-relu-backward.patch
bench-caffe: install torch-venv  ## Snake and Atari nets: forward+backward and forward ms (batch 32, one thread), Caffe beside a PyTorch twin
	$(PY) -m ddqn.bench.caffe_speed --torch-python $(TORCH_VENV)/bin/python $(foreach c,$(CAFFE_CANDIDATES),--candidate $(c)) \
	  $(foreach p,$(CAFFE_BASELINE),--without-patch $(p))

bench-env: install  ## Snake env steps/s (single game, K=1 and K=256 batches)
	$(PY) -m ddqn.bench.env_speed

bench-replay: install  ## replay memory sampling throughput (RAM and LMDB)
	$(PY) -m ddqn.bench.replay_speed

bench-ps: install  ## parameter server: solver apply vs memcpy of the same vector; updates/s over loopback
	$(PY) -m ddqn.bench.ps_speed

bench-worker: install  ## per-update compute and communicate time vs model size (linear fit, R²); a real worker's gradients/s by phase, paper and tuned, as built vs BLAS core Prescott vs before the speed patches (one run)
	$(PY) -m ddqn.bench.worker_speed --config paper tuned --prescott $(foreach p,$(CAFFE_BASELINE),--without-patch $(p))

bench-capacity: install  ## how many workers one server serves: synthetic clients 1..64, updates/s
	$(PY) -m ddqn.bench.capacity

bench-hostile: install  ## floods against the server, both auth modes, one run: 64 and 512 token holders, then 20,000 idle connections held through a snapshot and a join; attackers' messages/s, server busy %, the honest worker's requests/s vs unloaded (goal: >= 50 % under 512)
	$(PY) -m ddqn.bench.hostile

bench-links: install  ## the paper job on network-namespace hosts at link rates unlimited, 1, 0.5, 0.25 Gbit/s: updates/s, bytes per update from the interfaces' counters, compute/communicate split (root; sudo when not root); then bench-links-model
	$(SUDO) $(PY) -m ddqn.bench.links
	$(if $(SUDO),$(SUDO) chown -R $$(id -u):$$(id -g) results)
	$(PY) -m ddqn.bench.links_model

bench-shard-cost: install  ## each shard's busy time per update at 1/S of θ (S = 1, 2, 4, by part) on the real sharded server, and the analytic projection of capacity and load at W = 1…64 on 10 and 1 Gbit/s links
	$(PY) -m ddqn.bench.shard_cost

bench-shard-cost-alone: install  ## one shard alone with one client (PUSH, COMMIT with all S votes, FETCH; or a COMMIT answered with θ) at S = 1, 2, 4, 8, 16: its CPU µs per message by kind and part, and the fit a + b/S; under 'alone' in results/shard_cost.json (tuned's net and Adam, what bench-shard-projection projects; nothing else may run)
	$(PY) -m ddqn.bench.shard_cost --alone --config tuned --rounds 6

bench-shard-projection: install  ## the tuned timing at W = 1…64 for S = 1, 2, 4, 8, 16 (shards on executors or the driver) on 10 and 1 Gbit/s: the timing-only simulator with bench-worker's cycle and bench-shard-cost-alone's per-shard costs (a projection; ≈ 1 min)
	$(PY) -m ddqn.bench.shard_projection

bench-links-shards: install  ## the paper job on network-namespace hosts at 0.5 and 0.25 Gbit/s with one server and with 2 shards on executor hosts (issue 31: the real S = 2 against S = 1 under a rated link; root; sudo when not root)
	$(SUDO) $(PY) -m ddqn.bench.links --rates 0.5 0.25 --shards 1 2 --result links_shards --runs results/runs/links_shards
	$(if $(SUDO),$(SUDO) chown -R $$(id -u):$$(id -g) results)

bench-links-model: install  ## the simulator against bench-links' runs: two rates calibrate it (compute per gradient, links' efficiency), the others are predicted within ±15 %
	$(PY) -m ddqn.bench.links_model

bench-blas: install  ## Caffe forward+backward (paper, large nets) on each registry BLAS: Debian OpenBLAS, PyPI OpenBLAS and MKL, Debian BLIS
	@$(MAKE) --no-print-directory deb-deps DEB_PACKAGES=libblis4-pthread
	$(PY) -m ddqn.bench.blas

bench-suite: install  ## make test's time per test file, from its JUnit XML (results/suite_time.json; docs/testing.md's budget column)
	@mkdir -p runs; start=$$(date +%s); $(MAKE) --no-print-directory test PYTEST_ARGS=--junitxml=runs/suite-junit.xml; \
	rc=$$?; $(PY) -m ddqn.bench.suite_time runs/suite-junit.xml --wall $$(( $$(date +%s) - start )) && exit $$rc

bench-grad-norms: install  ## L2 norms of honest gradients per shipped config (max, p99.9, p99, p50; vs progress) for the server's norm limit
	$(PY) -m ddqn.bench.grad_norms

gifs: install  ## "dumb snake" (initial weights) and "smart snake" (runs/train's snapshot) GIFs, side by side
	$(PY) -m ddqn.bench.gifs

bench-scaling: CONFIG ?= paper
bench-scaling: MODES ?= serial async-1 async-2 sync-2
bench-scaling: SEEDS ?= 0 1
bench-scaling: MINUTES = 25
bench-scaling: install  ## serial vs 1 and 2 async workers vs sync: greedy score vs wall clock, same budget ($(MINUTES) min each, default 25), seeds $(SEEDS), one run after another (about 3 h 20 min; finished runs are reused, so it runs in parts: SEEDS=1); CONFIG: named config or YAML (default paper), MODES: a subset of the default "serial async-1 async-2 sync-2"
	$(PY) -m ddqn.bench.scaling --minutes $(MINUTES) --config $(CONFIG) --modes $(MODES) --seeds $(SEEDS) \
	  $(if $(RESTART),--restart)

SCALING_120_PLAN := async-2:3 async-2:0 async-2:1 serial:0 serial:1
bench-scaling-120: RUNS ?= $(SCALING_120_PLAN)
bench-scaling-120: install  ## issue 30's comparison: tuned async-2 (seeds 3, 0, 1) and serial (0, 1), 120 min each, one after another (10 h; finished runs are reused, so it runs in parts: RUNS="async-2:3" trains only that one, and the goals stay open until every run of the plan has run); one table per CPU model, results/scaling_120-<CPU>.json, which the runs of this machine's model fill; the 60-minute figures are the same runs cut at 60 min
	for r in $(RUNS); do $(SPARK_ENV) $(PY) -m ddqn.bench.scaling --result scaling_120 --config tuned --minutes 120 \
	  --every 10000 --levels 5 10 15 20 --budgets 60 --goal 60=15 --goal 120=20 --plan $(SCALING_120_PLAN) \
	  --per-cpu --modes $${r%%:*} --seeds $${r##*:} $(if $(RESTART),--restart) || exit 1; done

bench-scale-out: SCALE_OUT ?= --validate --project --controls --config small --real-minutes 8 --minutes 25 --updates 50000
bench-scale-out: install  ## the scale-out simulator (ddqn simulate): server service times, validation against real W = 1, 2 runs, projection to W = 64 (hours: see ddqn/bench/scale_out.py; SCALE_OUT: its options)
	$(PY) -m ddqn.bench.ps_speed --parts service $(if $(RESTART),--restart)
	$(SPARK_ENV) $(PY) -m ddqn.bench.scale_out $(SCALE_OUT) $(if $(RESTART),--restart)

bench-scale-out-paper: install  ## bench-scale-out on the paper config: validation (real vs simulated W = 1, 2, 8 min, seeds 0 and 1), projection W = 1, 2, 16, 64 (40,000 updates)
	$(SPARK_ENV) $(PY) -m ddqn.bench.scale_out --validate --project --config paper --real-minutes 8 --workers 1 2 16 64 --minutes 30 --updates 40000 $(if $(RESTART),--restart)

bench-scale-projection: install  ## issue 32's projection: tuned; a screen of each ε schedule at W = 16, 64 on seed 7 (docs/simulator.md's rule), then worker and the screen's best other schedule at W = 1, 16, 64 with seeds 0, 1, 2 and W = 2, 4, 8, 32 with seed 0, 16 shards on executors, 10 Gbit/s links; a run stops at score 5 or 80,000 updates (many hours; finished runs are reused, so it runs in parts; SCALE_PROJECTION: more options, e.g. --workers 1 --one-seed to run W = 1 only)
	$(PY) -m ddqn.bench.scale_projection --screen --project $(SCALE_PROJECTION) $(if $(RESTART),--restart)

bench-scale-staleness: install  ## DC-ASGD's λ tuned on seeds 5, 6 at W = 16, then the staleness options (none, max_staleness, staleness_lr, dc_lambda) at W = 16 and 64 on seeds 0, 1, with bench-scale-projection's best schedule (hours)
	$(PY) -m ddqn.bench.scale_projection --tune-dc --staleness $(SCALE_PROJECTION) $(if $(RESTART),--restart)

bench-scale-validate: install  ## the simulator's learning at W = 2 against real runs (seeds 0, 1, 2, 20 min each, nothing else running): the split test fixed in docs/simulator.md
	$(SPARK_ENV) $(PY) -m ddqn.bench.scale_projection --validate $(SCALE_PROJECTION) $(if $(RESTART),--restart)

bench-tuning: MINUTES = 30
bench-tuning: VARIANTS ?= base rmsprop library library-eps-25k library-cells gamma-0.99 double-dqn n-step-3 cells replay-100k eps-0.02 train-every-4 train-every-8 train-every-16 train-every-4-fetch-4 C-4000 lr-step dueling per per-lr-4 n-step-3-eps-0.01 fetch-every-2 batch-64
bench-tuning: SEED = 0
bench-tuning: install  ## variants of the tuned config (VARIANTS: names in ddqn/bench/tuning.py), 2 async workers, $(MINUTES) min each (default 30) with seed $(SEED) (default 0; never 3, which issue 30 reserves), one after another: best score ± se, minutes to 3, 5, 10; one row per variant, budget and seed
	$(SPARK_ENV) $(PY) -m ddqn.bench.tuning --minutes $(MINUTES) --seed $(SEED) --variants $(VARIANTS) $(if $(RESTART),--restart)

bench-atari: MINUTES = 60
bench-atari: SEEDS = 0
bench-atari: install  ## Atari: ALE steps/s, the DQN papers' nets beside the Snake net, and Breakout with 2 async workers for $(MINUTES) min (default 60) per seed in $(SEEDS) (default 0) against the random policy
	$(PY) -m ddqn.bench.atari --minutes $(MINUTES) --seeds $(SEEDS) $(if $(RESTART),--restart)

report: install  ## regenerate results/REPORT.md from the benchmarks' JSON files
	$(PY) -m ddqn.bench.report

# The Spark cluster in Docker (docker/docker-compose.yml): needs Docker Engine with the Compose v2 plugin (`docker
# compose`; on Debian 12, `python -m ddqn.distributed.docker_engine install` installs Debian 13's). COMPOSE_BUILD=
# starts from the image ddqn:local as it is, without building (the engine module builds it with host networking).
COMPOSE := docker compose -f docker/docker-compose.yml
COMPOSE_BUILD ?= --build

cluster-up:  ## build the image (`make install` inside) and start the Spark master + $(WORKERS) workers
	WORKERS=$(WORKERS) $(COMPOSE) up -d $(COMPOSE_BUILD) --wait --scale spark-worker=$(WORKERS) spark-master spark-worker

# -T (no TTY) when standard input is not a terminal (a test, a pipe), so that the job's output can be read.
cluster-train: cluster-up  ## `make train`'s job on the compose cluster; outputs in the volume ddqn_ddqn-data
	WORKERS=$(WORKERS) MINUTES=$(MINUTES) $(COMPOSE) run --rm --use-aliases --service-ports $$([ -t 0 ] || echo -T) submit

cluster-results:  ## copy the cluster's run from the volume to runs/cluster-train
	mkdir -p runs
	$(COMPOSE) run --rm --no-deps -v "$(CURDIR)/runs:/export" submit sh -c \
	  'rm -rf /export/cluster-train && cp -a /data/runs/train /export/cluster-train && chown -R $(shell id -u):$(shell id -g) /export/cluster-train'

cluster-down:  ## stop and remove the cluster's containers and network (the data volume is kept)
	$(COMPOSE) down --remove-orphans

clean:
	rm -rf $(VENV) $(TORCH_VENV) .pytest_cache
