# Two commands from a fresh clone: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install the project on first use; later calls reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
PYTEST_ARGS ?=

.PHONY: install data run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required")'
	@$(PYTHON) -c 'import shutil; free = shutil.disk_usage(".").free / 2**30; free < 7 and print(f"warning: {free:.1f} GiB free here; the install needs about 7 GiB (PyPI torch is a CUDA build)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(BIN)/qvae fetch --data-dir $(DATA)

# The main job through MLflow Projects, tracked in MLflow's default store (sqlite:///mlflow.db here
# unless MLFLOW_TRACKING_URI says otherwise). The MLproject defaults are the seed's (FID on 10 000
# images); on a CPU-only machine the Makefile lowers the costly evaluation settings so the whole run
# stays within about 15 minutes on 2 cores. Override: make run RUN_ARGS="-P fid_samples=10000".
CPU_FID_SAMPLES ?= 500
CPU_TSNE_INTERVAL ?= 2
CPU_TSNE_FINAL ?= 3000
CPU_NLL_IMAGES ?= 1000
CPU_PROBE_EPOCHS ?= 10
RUN_ARGS ?=

run: data
	@if $(BIN)/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then cpu_args=""; \
	else cpu_args="-P fid_samples=$(CPU_FID_SAMPLES) -P tsne_interval=$(CPU_TSNE_INTERVAL) -P tsne_final_points=$(CPU_TSNE_FINAL) -P nll_images=$(CPU_NLL_IMAGES) -P probe_epochs=$(CPU_PROBE_EPOCHS)"; \
	echo "no GPU: $$cpu_args (see README)"; fi; \
	set -x; PATH="$(abspath $(BIN)):$$PATH" MLFLOW_DISABLE_TELEMETRY=true \
	$(BIN)/mlflow run . --env-manager local -P data_dir=$(DATA) $$cpu_args $(RUN_ARGS)
	@echo "Browse the run: $(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}"

# pytest exits 5 when it collects no tests: that is a failure of the suite, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

# Style: pyflakes-level errors, import order and 120 columns ([tool.ruff] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check qvae tuning tests benchmarks

bench: data
	$(BIN)/python benchmarks/epoch_time.py --data-dir $(DATA)
	$(BIN)/python benchmarks/sampler.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
