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
	  if (t == "$$(PAPER)") t = "table1 table2 table4 fig3..fig8 cifar10 cifar100"; \
	  printf "%s\n", t; n = split(doc, w, " "); line = "   "; \
	  for (i = 1; i <= n; i++) {if (length(line) + length(w[i]) > 96) {print line; line = "   "} \
	  line = line " " w[i]} print line} {doc = ""}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

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
PAPER := table1 table2 table4 fig3 fig4 fig5 fig6 fig7 fig8 cifar10 cifar100
SCALE ?= full

# What the analysis writes per target (confusion: grids of the jobs' confusion matrices).
OUT_table1 := table1 confusion
OUT_table2 := table2 confusion
OUT_table4 := table4
OUT_fig3 := fig3
OUT_fig4 := fig4 confusion
OUT_fig5 := fig5
OUT_fig6 := fig6
OUT_fig7 := fig7
OUT_fig8 := fig8
OUT_cifar10 := cifar10 confusion
OUT_cifar100 := cifar100

# EXP_<target>: experiments swept; SET_<target>: overrides that narrow their grids.
ifeq ($(SCALE),smoke)
RUNS := multirun/smoke
REPORTS := reports/smoke
SEEDS := seed=0
EXP_table1 := single_mnist5k
SET_table1 := model=mlp_shallow imp=global,none 'classes=[0,1,2]'
EXP_table2 := pairwise_mnist5k
SET_table2 := model=mlp_shallow imp=global cardinality=1 pair=0,1
EXP_table4 := pairwise_mnist5k
SET_table4 := model=mlp_shallow cardinality=1 pair=0,1
EXP_fig3 := pairwise_mnist5k
SET_fig3 := model=mlp_shallow loss=maxent cardinality=1,2 pair=0
EXP_fig4 := complete_mnist5k
SET_fig4 := model=mlp_shallow permutation=0
EXP_fig5 := mode_connectivity_mnist5k
SET_fig5 := model=mlp_shallow permutation=ordered path.points=5
EXP_fig6 := temperature_mnist5k
SET_fig6 := loss.temperature=1,5 permutation=0
EXP_fig7 := pruning_mnist5k
SET_fig7 := imp.sparsity=0.9,0.99 permutation=0
EXP_fig8 := pruning_cnn_mnist
SET_fig8 := data=mnist5k experiment_name=pruning_cnn_mnist5k imp.sparsity=0.6,0.9 \
	cardinality=2 pair=0
# No CIFAR offline: the logit-vs-weight and modules-count summaries on MNIST-5k instead.
EXP_cifar10 := pairwise_mnist5k
SET_cifar10 := model=mlp_shallow,lenet loss=maxent imp=global cardinality=1 pair=0
EXP_cifar100 := complete_mnist5k
SET_cifar100 := model=mlp_shallow imp=global permutation=0,1
else ifeq ($(SCALE),mnist5k)
# The full protocol (5 seeds, every loss, IMP on/off, every |R| and pair) on the embedded
# MNIST-5k for the shallow MLP: table2 and table4 (900 jobs, 810 modules: see plan_only=true).
RUNS := multirun/mnist5k
REPORTS := reports/mnist5k
SEEDS := seed=0,1,2,3,4
EXP_table2 := pairwise_mnist5k
SET_table2 := model=mlp_shallow
EXP_table4 := pairwise_mnist5k
SET_table4 := model=mlp_shallow
else
RUNS := multirun
REPORTS := reports
SEEDS := seed=0,1,2,3,4
EXP_table1 := single_mnist single_fashion_mnist single_har single_yeast
EXP_table2 := pairwise_fashion_mnist pairwise_mnist pairwise_har pairwise_yeast
SET_table2 := imp=global
EXP_table4 := $(EXP_table2)
EXP_fig3 := pairwise_mnist pairwise_fashion_mnist
SET_fig3 := loss=maxent
EXP_fig4 := complete_mnist complete_fashion_mnist complete_har complete_yeast
EXP_fig5 := mode_connectivity_fashion_mnist
SET_fig5 := model=mlp_shallow
EXP_fig6 := temperature_mnist
EXP_fig7 := pruning_mnist
EXP_fig8 := pruning_cnn_mnist pruning_cnn_fashion_mnist
EXP_cifar10 := pairwise_cifar10
EXP_cifar100 := complete_cifar100
endif

.PHONY: $(PAPER)
## make table1 | table2 | table4 | fig3 ... fig8 | cifar10 | cifar100 [SCALE=smoke] [ARGS=...]:
## run the target's Hydra sweeps into multirun/<target>/<experiment> (finished jobs are skipped,
## modules come from the shared store), then `python -m multirun_analysis` into reports/<target>/
## (markdown, CSV, LaTeX, PNG; index.md shows them all). SCALE=smoke: the same pipeline on the
## embedded MNIST-5k with one seed and a few pairs/classes, into multirun/smoke/ and
## reports/smoke/, in minutes on 2 CPU cores. SCALE=mnist5k (table2, table4): the full protocol
## on the embedded MNIST-5k for the shallow MLP. ARGS: extra Hydra overrides for every sweep
## (ARGS=plan_only=true prints each sweep's plan: jobs, modules, training passes).
$(PAPER): $(STAMP)
	@set -e; for exp in $(EXP_$@); do \
	  echo "== $@: $$exp -> $(RUNS)/$@/$$exp"; \
	  $(PY) -m maxent_lightning +experiment=$$exp -m $(SEEDS) $(SET_$@) $(ARGS) \
	    hydra.sweep.dir=$(RUNS)/$@/$$exp; \
	done
	$(if $(findstring plan_only=true,$(ARGS)),@echo "plan_only: no analysis",\
	  $(PY) -m multirun_analysis $(addprefix $(RUNS)/$@/,$(EXP_$@)) --out $(REPORTS)/$@ \
	  --table $(OUT_$@))

# ---------------------------------------------------------------- reproduction report
# Table 4's sweep holds Table 2's (IMP on and off): read it instead when it exists.
REPORT_DIRS = $(wildcard $(RUNS)/table1) \
	$(if $(wildcard $(RUNS)/table4),$(RUNS)/table4,$(wildcard $(RUNS)/table2))

.PHONY: report
## The paper's published values beside ours [SCALE=smoke|mnist5k]: reads the sweeps that
## `make table1`, `table2`, `table4` wrote under multirun/<scale>/ (table4's instead of table2's
## when both exist) and writes Tables 1, 2, 4 and paper.md/csv (each published cell, ours, the
## difference, a flag where they differ beyond the seeds' spread) into reports/<scale>/report/.
report: $(STAMP)
	@$(if $(strip $(REPORT_DIRS)),,echo "error: no sweep of table1, table2 or table4 under \
	  $(RUNS)/; run make table2 SCALE=$(SCALE) (or table1, table4) first" >&2; exit 2)
	$(PY) -m multirun_analysis $(REPORT_DIRS) --out $(REPORTS)/report --table report

# ---------------------------------------------------------------- benchmark
.PHONY: bench
## Family trainer vs the sequential Lightning path vs a plain PyTorch loop (10 single-class
## shallow-MLP modules on MNIST-5k, IMP 2 rounds) and the pairwise smoke job's wall time; prints
## a table and `speedup: X.XX`, writes reports/bench.json. ARGS: --modules 100 --device cuda ...
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)
