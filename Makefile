# The whole set-up is `make smoke` (run the pipeline on the small built-in configuration)
# and `make test` (run the test suite). Both create .venv/ and install the project first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where pip carries a local cap at torch 2.14.1 (wheels on disk), take exactly those files;
# anywhere else any recent torch/torchvision will do.
TORCH ?= $(shell grep -qs '^torch<=2.14.1' /etc/xdg/pip/constraints.txt && echo 'torch==2.14.1 torchvision==0.29.1' || echo 'torch torchvision')

.PHONY: install test test-fast test-all smoke mini paper lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,slurm,digits,tune,imagenet]'
	touch $@

# The suite CI runs: everything (kill-and-resume of the workflow and a real SLURM cluster
# included) but the whole smoke workflow (marked e2e), which `make test-all` adds.
test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not e2e"

# The edit-run loop: every test not marked slow (the workflow end to end, kill-and-resume,
# the paper's models through whole runs, ...); under three minutes on two cores.
test-fast: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not slow and not e2e"

test-all: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

smoke: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --workflow-profile profiles/smoke

# The paper's experiment in miniature on real images (config/mini.yaml): every block pruned,
# full-epoch fine-tunings, the paper's r, theta, eta and Eq. 1; under 90 minutes on two cores.
mini: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --workflow-profile profiles/mini

paper: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores all --resources gpu=1

lint: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

clean:
	rm -rf results/*/ paper_figures/*.pdf paper_figures/*.png paper_figures/*.tex paper_figures/claims.md .snakemake
