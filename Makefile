# Two commands from a fresh clone: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install the project on first use; later calls reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
PYTEST_ARGS ?=

.PHONY: install data run test bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(BIN)/qvae fetch --data-dir $(DATA)

run: data
	$(BIN)/qvae train --data-dir $(DATA) --output-dir outputs

# pytest exits 5 when it collects no tests: that is a failure of the suite, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

bench: data
	$(BIN)/python benchmarks/epoch_time.py --data-dir $(DATA)
	$(BIN)/python benchmarks/sampler.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
