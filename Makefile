# distill-operator — the README's commands. Every target installs what it needs and
# caches it: the virtualenv (by lock-file hash), pip/uv downloads, the control-plane
# binaries (by Kubernetes version) and KubeRay's CRDs (by KubeRay version).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
K8S_VERSION := 1.35.4
KUBERAY_VERSION := 1.6.2
PROMETHEUS_OPERATOR_VERSION := 0.85.0
CACHE := $(HOME)/.cache/distill-operator
VENV := .venv
LOCK_HASH := $(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)
VENV_STAMP := $(VENV)/.installed-$(LOCK_HASH)
CONTROLPLANE := $(CACHE)/controlplane/v$(K8S_VERSION)/.complete
KUBERAY_CRDS := $(CACHE)/kuberay/v$(KUBERAY_VERSION)/.complete
export DISTILL_KUBERAY_CRDS := $(CACHE)/kuberay/v$(KUBERAY_VERSION)
PROMETHEUS_CRDS := $(CACHE)/prometheus-operator/v$(PROMETHEUS_OPERATOR_VERSION)/.complete
export DISTILL_PROMETHEUS_CRDS := $(CACHE)/prometheus-operator/v$(PROMETHEUS_OPERATOR_VERSION)
export TORCH_EXTENSIONS_DIR := $(CACHE)/torch-extensions
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help venv controlplane kuberay-crds prometheus-crds crds docs lint test test-unit demo bench chaos clean

help:
	@echo "make demo   run the example project on a local control plane and Ray cluster"
	@echo "make test   lint, type-check and run every test (unit and cluster)"
	@echo "make crds   regenerate crds/, the chart's copy and docs/api.md from the API models"
	@echo "make docs   regenerate docs/api.md (the API reference) from the API models"
	@echo "make bench  benchmarks (tables on stdout, JSON in bench/results/)"
	@echo "make chaos  the long chaos run: the operator SIGKILLed 24 times across all seven stages"

$(VENV_STAMP): pyproject.toml requirements.lock
	command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python --no-deps -e .
	touch $@

venv: $(VENV_STAMP)

$(CONTROLPLANE): hack/build-controlplane.sh
	bash hack/build-controlplane.sh $(K8S_VERSION) $(CACHE)/controlplane/v$(K8S_VERSION)

controlplane: $(CONTROLPLANE)

$(KUBERAY_CRDS): hack/fetch-kuberay-crds.sh
	bash hack/fetch-kuberay-crds.sh $(KUBERAY_VERSION) $(DISTILL_KUBERAY_CRDS)

kuberay-crds: $(KUBERAY_CRDS)

$(PROMETHEUS_CRDS): hack/fetch-prometheus-crds.sh
	bash hack/fetch-prometheus-crds.sh $(PROMETHEUS_OPERATOR_VERSION) $(DISTILL_PROMETHEUS_CRDS)

prometheus-crds: $(PROMETHEUS_CRDS)

crds: venv docs
	$(VENV)/bin/distill crd --out crds
	cp crds/distill.dev_distillationprojects.yaml charts/distill-operator/crds/

docs: venv
	$(VENV)/bin/python -m distill_operator.apidocs --out docs/api.md

lint: venv
	$(VENV)/bin/ruff check operator jobs tests bench
	$(VENV)/bin/ruff format --check operator jobs tests bench
	$(VENV)/bin/mypy --config-file pyproject.toml operator/distill_operator

test-unit: venv
	$(VENV)/bin/pytest tests/unit

test: venv controlplane kuberay-crds prometheus-crds lint
	$(VENV)/bin/pytest

demo: venv controlplane
	$(VENV)/bin/distill demo

bench: venv controlplane
	$(VENV)/bin/python bench/quality.py
	$(VENV)/bin/python bench/teach.py
	$(VENV)/bin/python bench/train.py
	$(VENV)/bin/python bench/scale.py

# make test runs the short form (6 kills, Define to Teach); this is the whole demo project.
chaos: venv controlplane kuberay-crds
	DISTILL_CHAOS_KILLS=24 DISTILL_CHAOS_FULL=1 $(VENV)/bin/pytest -s tests/cluster/test_chaos.py -k random_points

clean:
	-$(VENV)/bin/distill dev down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
