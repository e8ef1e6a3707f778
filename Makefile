# fedmoe — every target creates/uses the local virtualenv in .venv; nothing else is needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedmoe-installed
OUT    ?= runs/demo

.PHONY: install demo deploy-demo test test-slow test-cluster test-deploy test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default data: a federated run (Flower simulation, Ray backend).
demo: $(STAMP)
	$(VENV)/bin/fedmoe run --force --out $(OUT)

## A real deployment on 127.0.0.1 of a private network namespace: a SuperLink with TLS and SuperNode authentication, 3 SuperNodes
## (one per device), `flwr run` of this project for 3 rounds; every process is stopped afterwards.
deploy-demo: $(STAMP)
	$(VENV)/bin/fedmoe deploy local --force --out runs/deploy-demo --nodes 3 \
		--set partition.num_devices=3 --set federated.clients_per_round=3 \
		--set federated.rounds=3 --set federated.stage1_rounds=1

## The linter (ruff, configured in pyproject.toml): a finding fails the target before any test runs. Then the default
## test suite (slow, cluster and deploy tests excluded). pytest exits 5 when it collects nothing: that fails.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not slow and not cluster and not deploy" -q

## Slow tests that start no cluster or deployment (each of those runs in its own target once): `fedmoe run` on Ray
## killed with SIGKILL mid-way and resumed, compressed updates on Ray, the plugins under more Flower strategies.
test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not cluster and not deploy" -q

## A two-node Ray cluster started on this machine, the simulation attached to it (about 1.5 minutes).
test-cluster: $(STAMP)
	$(PY) -m pytest -m "cluster and not deploy" -q

## Real SuperLink/SuperNode processes with TLS on 127.0.0.1 (about 4 minutes on two busy cores), and, as root, on
## emulated hosts (network namespaces on a private subnet) with faults, and a Ray head and worker on two of them
## (about 15 more minutes on two very busy cores; skipped with the reason when not root).
test-deploy: $(STAMP)
	$(PY) -m pytest -m deploy -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m sims.bench.allocator
	$(PY) -m sims.bench.datagen
	$(PY) -m sims.bench.demo
	$(PY) -m sims.bench.pareto
	$(PY) -m sims.bench.federated_overhead
	$(PY) -m sims.bench.federated_scale
	$(PY) -m sims.bench.federated_quality
	$(PY) -m sims.bench.semi_async
	$(PY) -m sims.bench.split_vs_federated
	$(PY) -m sims.bench.split_gating
	$(PY) -m sims.bench.v2i
	$(PY) -m sims.bench.deploy

clean:
	rm -rf $(VENV) runs .pytest_cache
