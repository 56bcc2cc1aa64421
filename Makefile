# rollwright.deploy developer entry points. Everything installs itself: a fresh Debian machine,
# as root, needs only `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
COLL_LINK   := build/ansible_collections/rollwright/deploy
APT_PKGS    := openssh-server openssh-client haproxy socat iproute2 acl procps util-linux sudo shellcheck chromium openjdk-17-jre-headless
STAMP       := $(VENV)/.rollwright-stamp
REQ_HASH    := $(shell cat requirements-dev.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-16)

export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build
export ANSIBLE_HOST_KEY_CHECKING := False
# Bytecode caches go to one directory outside the source tree (none beside the collection's files,
# which the sanity tree and the built collection must not carry); the venv's are compiled there at install.
export PYTHONPYCACHEPREFIX := $(CURDIR)/build/pycache
# With a cache prefix Python looks for every module's bytecode there, the standard library's too, so a
# PYTHONDONTWRITEBYTECODE from the caller's environment would make every Python start (each
# ansible-playbook, each local module run) compile the standard library and the collection again.
unexport PYTHONDONTWRITEBYTECODE
UV_VERSION  := 0.9.30

.PHONY: help setup system-packages venv collection-link test unit integration molecule sanity lint demo demo-events \
        bench bench-inplace bench-zero-downtime bench-timing mutation build-collection clean iam-templates iam-matrix \
        long-functions

help:
	@echo "make demo    - set up, bring up a test world and run a real deployment end to end"
	@echo "make demo-events - the same world: an S3 upload deploys itself through ansible-rulebook"
	@echo "make test    - set up and run every test suite (unit, integration, molecule, sanity, lint)"
	@echo "make setup   - only the set-up (idempotent, quick when nothing changed)"
	@echo "make iam-matrix - remove each IAM policy action in turn and check the deployment fails before harm"

setup: system-packages venv collection-link

system-packages:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): requirements-dev.txt constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "setup: installing pinned Python packages into $(VENV)"
	@# uv installs the same pinned set as pip, in seconds rather than minutes; pip is the fallback.
	@{ $(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION) \
	   && $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements-dev.txt -c constraints.txt; } \
	  > $(VENV)/pip-install.log 2>&1 \
	  || $(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt \
	  >> $(VENV)/pip-install.log 2>&1 || { tail -40 $(VENV)/pip-install.log; exit 1; }
	@touch $(STAMP)

collection-link:
	@mkdir -p $(dir $(COLL_LINK))
	@test -L $(COLL_LINK) || ln -sfn ../../.. $(COLL_LINK)

test: setup
	@$(PY) -m tests.run_suites

unit: setup
	@$(PY) -m tests.run_suites unit

integration: setup
	@$(PY) -m tests.run_suites integration

molecule: setup
	@$(PY) -m tests.run_suites molecule

sanity: setup
	@$(PY) -m tests.run_suites sanity

lint: setup
	@$(PY) -m tests.run_suites lint

long-functions:
	@$(PY) -m tests.long_functions

demo: setup
	@$(PY) -m tests.harness demo

demo-events: setup
	@$(PY) -m tests.harness demo-events

build-collection: setup
	@mkdir -p build/dist && $(VENV)/bin/ansible-galaxy collection build --force --output-path build/dist .

bench: bench-inplace bench-zero-downtime

# e.g. make bench-inplace BENCH_ARGS="--hosts 100 --configs half --stage on"
BENCH_ARGS ?=

bench-inplace: setup
	@$(PY) -m benchmarks.inplace $(BENCH_ARGS)

bench-zero-downtime: setup
	@$(PY) -m benchmarks.zero_downtime

# the tight timing figures (Lambda steps, alarm to rollback, lease keeper, hook timeout) as a table
bench-timing: setup
	@$(PY) -m benchmarks.lambda_timing

# hand-written mutants of the core rules; every one must be caught (not part of `make test`)
mutation: setup
	@$(PY) -m tests.mutation

clean:
	@-$(PY) -m tests.harness down-all 2>/dev/null
	rm -rf build .pytest_cache .hypothesis tests/output

iam-templates: setup
	@PYTHONPATH=build $(PY) -c "from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import POLICY_KINDS, template_text; \
	[open(f'extensions/iam/{k}.json', 'w').write(template_text(k)) for k in POLICY_KINDS]"

# The one-action-removed IAM matrices of in-place, Lambda and blue/green (~60 deployments on IAM-enforcing
# emulators, one file per worker; not in `make test`).
iam-matrix: setup
	@$(PY) -m pytest tests/iam_matrix -q -n 3 --dist loadfile -rxXs
