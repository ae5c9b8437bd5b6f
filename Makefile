# The two commands of the README: `make demo` and `make test`. Both do all set-up themselves,
# are idempotent, and cost seconds once the virtual environments exist.

PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-ls
BIN := $(VENV)/bin
# The CPU build of torch that lies on the development machines' disk; a bare `torch` or an
# unpinned range pulls a several-GB CUDA build instead.
TORCH := torch==2.13.0
# Label Studio pins many packages of its own, so it lives in a virtual environment apart.
LABEL_STUDIO := label-studio==1.23.2
# Licence-clean speech synthesisers for the benchmark episode generator (tests use them).
SYSTEM_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: setup setup-system demo test lint format bench-import hub-models clean

setup: $(VENV)/.installed $(LS_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install $(PIP_FLAGS) $(TORCH)
	$(BIN)/pip install $(PIP_FLAGS) -e ".[bench,dev]"
	touch $@

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(LS_VENV)/bin/pip install $(PIP_FLAGS) $(LABEL_STUDIO)
	touch $@

# Installs only what is missing, so it is instant on a machine that has them all.
setup-system:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "installing system packages:$$missing"; \
		$$sudo apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo: setup
	$(BIN)/speaker-grouping demo $(DEMO_ARGS)

test: setup setup-system lint
	SPEAKER_GROUPING_REQUIRE_LABEL_STUDIO=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-import: setup
	$(BIN)/python -m bench.bench_import

# Optional: ECAPA (speechbrain) and CLIP (open_clip) need torchaudio and torchvision, which do
# not load beside the CPU torch 2.13.0 of .venv; this environment (about 6.7 GB, 13 minutes)
# pairs them with torch 2.14.1. torchaudio 2.11 declares no torch dependency of its own.
HUB_VENV := .venv-hub
hub-models: $(HUB_VENV)/.installed

$(HUB_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(HUB_VENV)
	$(HUB_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip "setuptools<81" wheel
	$(HUB_VENV)/bin/pip install $(PIP_FLAGS) torch==2.14.1 torchvision==0.29.1
	$(HUB_VENV)/bin/pip install $(PIP_FLAGS) torchaudio==2.11.0 speechbrain==1.1.2 open_clip_torch==3.3.0
	$(HUB_VENV)/bin/pip install $(PIP_FLAGS) -e ".[bench,dev]"
	touch $@

clean:
	rm -rf $(VENV) $(LS_VENV) $(HUB_VENV) demo-data .pytest_cache .ruff_cache
