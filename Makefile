# maxent_lightning: every target uses the virtual environment in .venv (created when missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup run test test-all lint clean clean-store
.DEFAULT_GOAL := help

## Print the documented targets (this list).
help:
	@awk '/^## /{doc = doc substr($$0, 4) " "; next} \
	  /^[^ \t#=]+:([^=]|$$)/ && doc {t = $$1; sub(/:.*/, "", t); \
	  if (t == "$$(PAPER)") t = "table1 table2 table4 fig2..fig24 cifar10 cifar100 cifar10_* width"; \
	  printf "%s\n", t; n = split(doc, w, " "); line = "   "; \
	  for (i = 1; i <= n; i++) {if (length(line) + length(w[i]) > 96) {print line; line = "   "} \
	  line = line " " w[i]} print line} {doc = ""}' $(MAKEFILE_LIST)

# An install the README's quickstart made (this checkout's maxent_lightning[dev], editable,
# newer than pyproject.toml: scripts/installed.py) is kept; otherwise (re)install.
$(STAMP): pyproject.toml
	@test -x $(PY) && $(PY) -I scripts/installed.py || { \
	  test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]'; }
	@touch $(STAMP)

## Create .venv and install the package with its dev tools.
setup: $(STAMP)

## Train one module on the embedded MNIST-5k (MaxEnt + IMP) and print its summary.
run: $(STAMP)
	$(PY) -m maxent_lightning $(ARGS)

## Fast test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q

## Everything, slow sweeps included.
test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

## Lint with ruff.
lint: $(STAMP)
	$(VENV)/bin/ruff check maxent_lightning multirun_analysis tests

## Remove outputs, sweeps and bench reports (keeps the module store: see clean-store).
clean:
	rm -rf outputs multirun reports/*.json

# The module store (store.root; paths.store_dir, default store/ where the command runs).
STORE ?= store

## Delete the module store (every trained module; STORE=DIR for another one), without asking.
clean-store:
	@if [ -d "$(STORE)" ]; then \
	  echo "deleting the module store $(STORE)/: $$(find "$(STORE)" -mindepth 2 -maxdepth 2 \
	    -type d | wc -l | tr -d ' ') module directories, $$(du -sh "$(STORE)" | cut -f1)"; \
	  rm -rf "$(STORE)"; \
	else echo "no module store at $(STORE)/: nothing to delete"; fi

# ---------------------------------------------------------------- paper tables and figures
# Every target's sweeps and analysis outputs, per scale, live in multirun_analysis/targets.py
# (`python -m multirun_analysis.targets --list`).
PAPER := table1 table2 table4 $(foreach i,2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 \
	22 23 24,fig$(i)) cifar10 cifar100 cifar10_complete cifar10_barriers cifar10_losses width
SCALE ?= full
# authors: the released code, which produced the published numbers; paper: its text.
PROTOCOL ?= authors
# multirun[/<scale>][/<protocol>]: a protocol other than authors gets its own folders.
SUBDIR := $(if $(filter full,$(SCALE)),,/$(SCALE))$(if $(filter authors,$(PROTOCOL)),,/$(PROTOCOL))
RUNS := multirun$(SUBDIR)
REPORTS := reports$(SUBDIR)

.PHONY: $(PAPER) targets
## make table1 | table2 | table4 | fig2 ... fig24 | cifar10 | cifar100 | cifar10_complete |
## cifar10_barriers | cifar10_losses | width [SCALE=smoke|mnist5k|full] [PROTOCOL=authors|paper]
## [ARGS=...]: run the
## target's Hydra sweeps into multirun[/<scale>]/<target>/<experiment> (finished jobs are skipped,
## modules come from the shared store), then `python -m multirun_analysis` into
## reports[/<scale>]/<target>/ (markdown, CSV, LaTeX, PNG; index.md shows them all). SCALE=full
## (default): the paper's grids on the real data sets; mnist5k: the same on the embedded MNIST-5k
## where MNIST can stand in (not CIFAR); smoke: the whole pipeline in a minute or two on 2 CPU
## cores (one seed, a few classes or pairs, few epochs; CIFAR targets on small CIFAR-format files
## it writes). PROTOCOL: authors (default; the released code behind the published numbers) or
## paper (its text), into multirun[/<scale>]/paper/. ARGS: extra Hydra overrides for every sweep
## (ARGS=plan_only=true prints the plans).
$(PAPER): $(STAMP)
	$(PY) -m multirun_analysis.targets $@ --scale $(SCALE) --protocol $(PROTOCOL) $(ARGS)

## List the paper targets with what each reproduces and its scales.
targets: $(STAMP)
	@$(PY) -m multirun_analysis.targets --list

# ---------------------------------------------------------------- reproduction report
# Table 4's sweep holds Table 2's (IMP on and off): read it instead when it exists.
REPORT_DIRS = $(wildcard $(RUNS)/table1) \
	$(if $(wildcard $(RUNS)/table4),$(RUNS)/table4,$(wildcard $(RUNS)/table2))

.PHONY: report
## The paper's published values beside ours [SCALE=smoke|mnist5k] [PROTOCOL=...]: reads the
## sweeps that `make table1`, `table2`, `table4` wrote under multirun/<scale>[/<protocol>]/
## (table4's instead of table2's when both exist) and writes Tables 1, 2, 4 and paper.md/csv (each
## published cell, ours, the difference, a flag where they differ beyond the seeds' spread) into
## reports/<scale>[/<protocol>]/report/.
report: $(STAMP)
	@$(if $(strip $(REPORT_DIRS)),,echo "error: no sweep of table1, table2 or table4 under \
	  $(RUNS)/; run make table2 SCALE=$(SCALE) (or table1, table4) first" >&2; exit 2)
	$(PY) -m multirun_analysis $(REPORT_DIRS) --out $(REPORTS)/report --table report

# ---------------------------------------------------------------- W&B upload
WANDB ?= $(if $(wildcard $(VENV)/bin/wandb),$(VENV)/bin/wandb,wandb)
SYNC_DIRS ?= multirun outputs $(STORE) reports

.PHONY: sync
## Upload every offline W&B run (after `wandb login`): every <dir>/**/wandb/offline-run-* under
## SYNC_DIRS (default: multirun outputs store reports: each job of a sweep or a single run, each
## module, each analysis), one `wandb sync` for them all. DRY=1 prints the command instead.
sync:
	@runs=$$(find $(SYNC_DIRS) -type d -path '*/wandb/offline-run-*' -prune -print \
	  2>/dev/null | sort); \
	if [ -z "$$runs" ]; then echo "no offline W&B runs under $(SYNC_DIRS)"; exit 0; fi; \
	echo "$$(echo "$$runs" | wc -l | tr -d ' ') offline W&B run(s) under $(SYNC_DIRS)"; \
	echo "$$runs" | xargs $(if $(DRY),echo) $(WANDB) sync

# ---------------------------------------------------------------- benchmark
.PHONY: bench
## Family trainer vs the sequential Lightning path vs a plain PyTorch loop (10 single-class
## shallow-MLP modules on MNIST-5k, IMP 2 rounds) and the pairwise smoke job's wall time; prints
## a table and `speedup: X.XX`, writes reports/bench.json. ARGS: --modules 100 --device cuda ...
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

.PHONY: gpu-check
## On a GPU machine: the headline sweep (+experiment=pairwise_cifar10 -m seed=0) on random
## CIFAR-10-format images over every visible GPU, per device passes, modules, wall time and peak
## memory, then family vs sequential samples/s; writes reports/gpu_check.json. ARGS: --images N ...
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(ARGS)
