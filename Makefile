# Two commands on a fresh clone:  `make train`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# What .venv gets; CI adds the cluster extra (Ray) so that the sweep tests run too: make test EXTRAS=test,export,cluster
EXTRAS ?= test,export
comma  := ,
# One stamp per set of extras: asking for other extras installs them.
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
RUN    ?= runs/cartpole-$(shell date +%Y%m%d-%H%M%S)
# pytest-xdist processes for `make test`, each given whole test files (module fixtures train once); each imports
# TensorFlow (~1.5 GB), so mind the memory before raising it.
TEST_WORKERS ?= 2

.PHONY: train test test-all bench clean-venv x11-tools fashion-mnist

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# Train CartPole-v1 with the default preset, then record the trained agent.
train: $(STAMP)
	$(PY) train.py --env CartPole-v1 --run-dir $(RUN)
	$(PY) play.py $(RUN) --headless --episodes 1 --record $(RUN)/cartpole.mp4
	@echo "run saved in $(RUN); video: $(RUN)/cartpole.mp4; watch it: $(PY) play.py $(RUN)"

# A real X server and a key sender for the real-window tests (Debian's xvfb and xdotool).
x11-tools:
	@command -v Xvfb >/dev/null && command -v xdotool >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get install -y -q xvfb xdotool >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q xvfb xdotool >/dev/null 2>&1; } || \
	  echo "warning: could not install xvfb and xdotool; the real-window tests will be skipped"; }

# Fashion-MNIST for `python -m classic mnist --dataset fashion` (Debian's dataset-fashion-mnist: its four gzipped IDX files).
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@test -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz && test -f $(FASHION_MNIST_DIR)/train-labels-idx1-ubyte.gz && \
	  test -f $(FASHION_MNIST_DIR)/t10k-images-idx3-ubyte.gz && test -f $(FASHION_MNIST_DIR)/t10k-labels-idx1-ubyte.gz || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "warning: could not install dataset-fashion-mnist; python -m classic mnist --dataset fashion needs it (or --data DIR)"; }

# Fast tests (the default); `make test-all` adds the slow learning checks.
test: $(STAMP) x11-tools
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

test-all: $(STAMP) x11-tools
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) bench/solve.py --seeds 5

clean-venv:
	rm -rf $(VENV)
