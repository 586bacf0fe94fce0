# The two commands a newcomer needs: `make run` and `make test`.
# Both create the virtualenv on first use; nothing here needs root.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py index/_kernel.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The service on 127.0.0.1:8000 (DEEPHASH_* variables configure it); the first start
# indexes the sample catalogue in the background, and /ready says when it is in.
run: install
	$(BIN)/python -m service serve

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.index_bench

clean:
	rm -rf $(VENV) build *.egg-info index/*.so
