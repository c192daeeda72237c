# make figures   - every figure of the offline quick profile (sets itself up); MODEL=mini_resnet|mini_vit|...
# make retrain MODEL=mini_alexnet - the same, with the stand-in trained here instead of its shipped weights
# make test      - the test suite (sets itself up)
# make paper IMAGENET=/path/to/imagenet   - the paper profile 01-08 (GPU recommended): installs its extra, fetches
#                  Broden, then runs; DRY=1: the plan and its cost only; GPUS=8: 01/03/05/08 on 8 ranks (docs/gpus.md)
# make broden    - the Broden release 08 uses, into data/broden (BRODEN_DIR=...)
# make study     - the user-study app for participants (Voila, http://localhost:8866)
# make study-web - the user study as a static jsPsych folder to host anywhere (Prolific, JATOS, Pavlovia)
# make verify    - hash every artifact of a profile: good, stale or corrupt
# make prune     - remove a profile's artifacts that no setting reads (other code, gone upstream); DRY=1 lists
# make site      - the static demo site of a profile's models (site/<profile>/index.html)
# make demo      - the quick profile for every stand-in model (01-08; every basis for mini_alexnet), then the site
# make controls  - every yardstick for the stand-ins trained and untrained, with a random basis (figures/<profile>/controls/)
PYTHON   ?= python3
VENV     ?= .venv
PROFILE  ?= quick
IMAGENET ?=
# the network: empty for the profile's own (mini_alexnet; alexnet on paper), or any name of helpers/models/registry.py
MODEL    ?=
MODEL_ARG = $(if $(MODEL),-p model=$(MODEL),)
# processes (one per GPU) for the steps that scale with the images: torch.distributed ranks (docs/gpus.md)
GPUS     ?=
GPUS_ARG  = $(if $(GPUS),-p nproc=$(GPUS),)
# FAISS build of make setup: cpu, or gpu (faiss-gpu-cu12); make paper takes gpu where nvidia-smi finds a GPU
FAISS    ?= cpu
PAPER_FAISS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)
FASHION  := /usr/share/datasets/fashion-mnist
FORTUNES := /usr/share/games/fortunes
# Where the package runs: PY=/path/to/python if given; else the active conda environment (conda activate
# neuron-explanations; never base); else $(VENV), made here. make setup installs into that environment.
ifeq ($(origin PY),undefined)
  ifneq ($(and $(CONDA_PREFIX),$(filter-out base,$(CONDA_DEFAULT_ENV))),)
    PY := $(CONDA_PREFIX)/bin/python
  else
    PY := $(VENV)/bin/python
  endif
endif
# what each install did, per environment and extras: inside $(VENV), so that removing it forgets them; else in
# .make/ (git-ignored)
STAMPS   := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed/pip,.make/$(shell printf '%s' '$(PY)' | cksum | cut -d' ' -f1))
# make paper: the Broden folder (fetched into BRODEN_DIR unless BRODEN is given), -p settings (ARGS="-p seed=1"),
# notebooks (ONLY="01 02"), and DRY=1 for the dry run
BRODEN     ?=
BRODEN_DIR ?= data/broden
ARGS     ?=
ONLY     ?=
DRY      ?=
FETCH_BRODEN = $(if $(or $(BRODEN),$(DRY)),,$(if $(ONLY),$(filter 08 8,$(ONLY)),yes))

.PHONY: setup setup-paper fashion-mnist fortunes git-filter chromium figures retrain paper imagenet-given broden study study-web site demo controls test lab \
        bench verify prune clean

setup: $(STAMPS)-dev-$(FAISS) fashion-mnist fortunes git-filter

# the paper profile's extra (DreamSim) and the FAISS build of this machine
setup-paper: $(STAMPS)-dev-paper-$(PAPER_FAISS) git-filter

# notebooks saved from JupyterLab keep their outputs on disk, never in a commit (helpers/pipeline/nbstrip.py,
# applied to notebooks/*.ipynb by .gitattributes; git runs it from the project root)
git-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.notebook-outputs.clean "$(PY) -m helpers.pipeline.nbstrip"; fi

# $(STAMPS)-<extras>-<faiss>: pip install -e '.[<extras>,<faiss>]' into PY's environment ($(VENV) is made first);
# an environment that already imports FAISS (conda's faiss-gpu) keeps it; the other pip build is removed first
$(STAMPS)-%: pyproject.toml
	@if [ "$(PY)" = "$(VENV)/bin/python" ] && [ ! -x "$(PY)" ]; then \
	  $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip; fi
	@extras="$(subst -,$(comma),$*)"; faiss="$(lastword $(subst -, ,$*))"; \
	if [ "$(PY)" != "$(VENV)/bin/python" ] && $(PY) -c "import faiss" 2>/dev/null \
	   && ! $(PY) -m pip show --quiet faiss-cpu faiss-gpu-cu12 >/dev/null 2>&1; then extras="$${extras%,*}"; \
	elif [ "$$faiss" = gpu ]; then $(PY) -m pip uninstall --quiet -y faiss-cpu 2>/dev/null || true; \
	else $(PY) -m pip uninstall --quiet -y faiss-gpu-cu12 2>/dev/null || true; fi; \
	echo "$(PY) -m pip install -e '.[$$extras]'"; \
	$(PY) -m pip install --quiet -e ".[$$extras]"
	@mkdir -p $(dir $@) && touch $@
comma := ,

# $(call apt,PACKAGE,what to do without apt): Debian's PACKAGE where apt is usable (as root or by sudo).
apt = if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); \
	else echo "$(2)"; fi

# Debian's dataset-fashion-mnist where apt is usable; otherwise data/raw/ or
# torchvision's download are tried on first use (helpers/images/fashion.py).
fashion-mnist:
	@if [ -d $(FASHION) ] || ls data/raw/*idx* >/dev/null 2>&1; then :; \
	else $(call apt,dataset-fashion-mnist,Fashion-MNIST: no apt; put the IDX files in data/raw/ or let torchvision download them); fi

# Debian's fortunes, the quick profile's text corpus (helpers/text/corpus.py); a folder of .txt/.jsonl otherwise.
fortunes:
	@if [ -d $(FORTUNES) ]; then :; \
	else $(call apt,fortunes,fortunes: no apt; the text corpus is a folder of .txt/.jsonl files of yours); fi

# Debian's chromium for the browser tests where apt is usable; otherwise they skip and say what to install.
chromium:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	else $(call apt,chromium,Chromium: no apt; the browser tests will skip: install chromium or set CHROMIUM=/path/to/chrome); fi

figures: setup
	$(PY) -m helpers.run --profile $(PROFILE) $(MODEL_ARG) $(GPUS_ARG)

# trains the stand-in (pinned, into data/<profile>/<model>/model/), says how it compares with the shipped
# weights (hash, test accuracy), then runs every notebook with it
retrain: setup
	$(PY) -m helpers.run --profile $(PROFILE) -p retrain=True $(MODEL_ARG)

paper: imagenet-given setup-paper $(if $(FETCH_BRODEN),broden,)
	$(PY) -m helpers.run --profile paper -p data_root=$(IMAGENET) $(if $(BRODEN),-p broden_root=$(BRODEN),) \
	  $(MODEL_ARG) $(GPUS_ARG) $(ARGS) $(if $(ONLY),--only $(ONLY),) $(if $(DRY),--dry-run,)

imagenet-given:
	@test -n "$(IMAGENET)" || { echo "usage: make paper IMAGENET=/path/to/imagenet (holding train/ and val/)"; exit 2; }

# the Broden release (NetDissect's broden1_224.zip), resumed, checked and unpacked into $(BRODEN_DIR)/broden1_224
broden: setup
	$(PY) -m helpers.images.broden $(BRODEN_DIR)

# after `make figures` (06 makes the stimuli); PROFILE=smoke|quick|paper, PORT=8866
PORT     ?= 8866
study: setup
	$(PY) -m helpers.study.app --profile $(PROFILE) --port $(PORT) $(MODEL_ARG)

# the study as a static jsPsych folder (npm installs the pinned jsPsych once); WEB="--completion-code C0DE
# --attention-checks 2 --consent consent.html --data-url https://..." (docs/study-online.md)
WEB      ?=
study-web: setup
	$(PY) -m helpers.study.web --profile $(PROFILE) $(MODEL_ARG) $(WEB)

site: setup
	$(PY) -m helpers.site --profile $(PROFILE)

STANDINS := mini_alexnet mini_resnet mini_vit
# the stand-ins whose demo fits every basis (the others: PCA and neurons, as the paper), on half the quick
# profile's ablation images and 8 units per basis in 08, so that make demo stays under 20 minutes on a
# 2-core CPU; make demo EVERY_BASIS="$(STANDINS)" fits all five for all (about 30 minutes)
EVERY_BASIS := mini_alexnet
EVERY_BASIS_SETTINGS := -p bases=pca,neuron,ica,nmf,sae -p ablation_eval=1000 -p n_explain=8
demo: setup
	@for m in $(STANDINS); do \
	  $(PY) -m helpers.run --profile quick -p model=$$m \
	    $$(case " $(EVERY_BASIS) " in *" $$m "*) echo "$(EVERY_BASIS_SETTINGS)";; esac) || exit 1; done
	$(PY) -m helpers.site --profile quick

# 02, 05, 06-07 and 08 (and what they need) for each stand-in (MODEL=...: that one) trained and untrained, the
# random orthonormal basis among the bases, in data/<profile>/controls/; tables and figures in figures/<profile>/controls/
controls: setup
	$(PY) -m helpers.controls --profile $(PROFILE) $(if $(MODEL),--models $(MODEL),)

test: setup chromium
	$(PY) -m pytest

# JupyterLab at the project root, so that jupytext.toml applies (saving a .py updates its pair), opened on
# notebooks/; as root too. Lab writes only into .jupyterlab/ (git-ignored): its workspaces, and its settings,
# seeded from the project's defaults (jupyterlab-settings/: a .py opens as a notebook, no autosave) with each
# file copied in only where absent, so that a setting changed in Lab stays changed and the tracked files stay as
# they are
lab: setup
	@mkdir -p .jupyterlab/settings .jupyterlab/workspaces && cd jupyterlab-settings && find . -type f | \
	  while read -r f; do [ -e "../.jupyterlab/settings/$$f" ] || \
	  { mkdir -p "../.jupyterlab/settings/$${f%/*}" && cp "$$f" "../.jupyterlab/settings/$$f"; } || exit 1; done
	JUPYTERLAB_SETTINGS_DIR=$(CURDIR)/.jupyterlab/settings JUPYTERLAB_WORKSPACES_DIR=$(CURDIR)/.jupyterlab/workspaces \
	  $(PY) -m jupyterlab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: setup
	$(PY) bench/pca.py
	$(PY) bench/sampling.py
	$(PY) bench/knn.py
	$(PY) bench/ablation.py
	$(PY) bench/training.py
	$(PY) bench/compositional.py
	$(PY) bench/bases.py

# every artifact hashed and checked against the profile (PROFILE=smoke|quick|paper)
verify: setup
	$(PY) -m helpers.verify --profile $(PROFILE) $(MODEL_ARG)

prune: setup
	$(PY) -m helpers.verify --profile $(PROFILE) --prune $(if $(DRY),--dry-run)

clean:
	rm -rf data/smoke figures/smoke
