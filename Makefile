# The README's two commands are `make demo` and `make test`; both set up a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := containernetworking-plugins iproute2 iputils-ping procps util-linux etcd-server openssl \
	containerd runc gcc libc6-dev
# kube-apiserver for the Kubernetes tests: built once from Debian's source package, cached here
K8S_CACHE ?= /var/cache/genie-k8s
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup demo test lint typecheck unit bench clean kube-apiserver

setup: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT): Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && apt-get install -y -q $$missing; fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/genie demo

lint: setup
	$(BIN)/ruff check genie tests bench
	$(BIN)/ruff format --check genie tests bench

typecheck: setup
	$(BIN)/mypy

kube-apiserver:
	GENIE_K8S_CACHE=$(K8S_CACHE) tests/k8s/build-kube-apiserver.sh >/dev/null

unit: setup kube-apiserver
	GENIE_K8S_CACHE=$(K8S_CACHE) $(BIN)/pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/run all --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
