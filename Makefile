# pliers.deploy — the commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HOSTS ?= 1
RELEASE ?= 1.0.0
MODE ?= compose
VENV := .venv
# The demo deploys the local inventory (local-swarm with MODE=swarm) onto the demo lab's hosts;
# their addresses, SSH key and registry CA come from the lab's inventory, the registry
# credentials as vault-like extra vars.
DEMO_LAB := $(if $(filter swarm,$(MODE)),pliers-swarm,pliers-demo)
DEMO_HOSTS := $(if $(filter swarm,$(MODE)),3,1)
DEMO_INVENTORY := $(if $(filter swarm,$(MODE)),inventories/local-swarm,inventories/local)
DEMO_STATE := .lab/labs/$(DEMO_LAB)
# The other demo, which would hold 127.0.0.1:8080 and 8443 too, and how to remove it.
DEMO_OTHER := $(if $(filter swarm,$(MODE)),pliers-demo,pliers-swarm)
DEMO_OTHER_DOWN := make demo-down$(if $(filter swarm,$(MODE)),, MODE=swarm)
DEMO_PLAY := $(VENV)/bin/ansible-playbook -i $(DEMO_INVENTORY) -i $(DEMO_STATE)/inventory.yml \
	--vault-password-file inventories/local/vault-password-dev-only.txt -e @$(DEMO_STATE)/registry-credentials.yml
# The lab runs on the machine's python3 (stdlib only); the controller venv needs
# Python 3.12+ for ansible-core 2.21. pyenv machines keep 3.12 outside the PATH default.
LAB := python3 -m lab
PYTHON_FOR_VENV ?= $(shell for p in python3.12 python3.13 $(wildcard /root/.pyenv/versions/3.12*/bin/python3.12); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: help setup bench collection test-collection demo rollback releases backup restore demo-down lab-up lab-down lab-status lab-images lab-clean test test-unit test-lab test-faults test-molecule lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

COLLECTION_LINK := $(VENV)/collections/ansible_collections/pliers/deploy
# The collection as Galaxy ships it, and installed from that tarball into an empty collections path. Outside
# the checkout: ansible-test lists a collection's files with git when it finds a .git above it.
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
BUILD := /tmp/pliers-deploy-build-$(shell printf %s "$(CURDIR)" | sha256sum | cut -c1-8)
TARBALL := $(BUILD)/pliers-deploy-$(VERSION).tar.gz
INSTALLED := $(BUILD)/collections/ansible_collections/pliers/deploy
# The supported ansible-core range is the newest release (the controller venv) and the one before it.
CORE_PREVIOUS := 2.20.10
CORE_PREVIOUS_VENV := .venv-core-$(CORE_PREVIOUS)

setup: $(VENV)/.installed $(COLLECTION_LINK) ## controller venv: ansible-core, community collections, molecule, linters

$(VENV)/.installed: requirements.txt constraints.txt
	@test -n "$(PYTHON_FOR_VENV)" || { echo "error: Python 3.12 or newer is needed for the controller venv" >&2; exit 1; }
	$(PYTHON_FOR_VENV) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	touch $@

# ansible.cfg finds this checkout as the pliers.deploy collection through this link.
$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

demo: setup ## deploy the full stack on a lab host (RELEASE=x.y.z: app version; MODE=swarm: 3-node Swarm)
	@case "$(MODE)" in compose|swarm) ;; *) echo "error: MODE must be compose or swarm, got '$(MODE)'" >&2; exit 2;; esac
	@if [ -n "$$(docker ps -q --filter label=pliers.lab=$(DEMO_OTHER) 2>/dev/null)" ]; then \
		echo "error: the $(DEMO_OTHER) demo holds 127.0.0.1:8080 and 8443; run '$(DEMO_OTHER_DOWN)' first" >&2; exit 2; fi
	$(LAB) --name $(DEMO_LAB) up --hosts $(DEMO_HOSTS) --publish 8080:80 --publish 8443:443 --publish 9090:9090
	$(DEMO_PLAY) playbooks/deploy.yml -e pliers_release=$(RELEASE)
	@echo
	@echo "Pliers $(RELEASE) is up ($(MODE) mode):"
	@echo "  web         https://127.0.0.1:8443/ (http://127.0.0.1:8080/ redirects there)"
	@echo "  api         https://127.0.0.1:8443/api/health"
	@echo "  ai-service  https://127.0.0.1:8443/ai/health"
	@echo "  certificate from the lab's ACME server (pebble), for $(DEMO_LAB).pliers.test; trust it with curl:"
	@echo "    curl --cacert $(DEMO_STATE)/acme-root.pem --resolve $(DEMO_LAB).pliers.test:8443:127.0.0.1 https://$(DEMO_LAB).pliers.test:8443/api/health"
	@echo "  prometheus  $(if $(filter swarm,$(MODE)),not published in swarm mode (see README: Monitoring),http://127.0.0.1:9090/)"

rollback: setup ## return the demo to its previous release (TO=<id or release> from `make releases`)
	$(DEMO_PLAY) playbooks/rollback.yml $(if $(TO),-e pliers_rollback_to=$(TO))

releases: setup ## print the demo's release history
	@$(DEMO_PLAY) playbooks/releases.yml | sed -n '/print it/,/^$$/p'

backup: setup ## back the demo's data up now (DRILL=true: and drill the backup)
	$(DEMO_PLAY) playbooks/backup.yml $(if $(DRILL),-e drill=$(DRILL))

restore: setup ## restore the demo's data from its newest backup (BACKUP=<name>: another; DRILL=true: a drill)
	$(DEMO_PLAY) playbooks/restore.yml $(if $(BACKUP),-e backup=$(BACKUP)) $(if $(DRILL),-e drill=$(DRILL))

demo-down: ## remove the demo and its lab hosts (MODE=swarm for the swarm demo)
	@$(LAB) --name $(DEMO_LAB) down

lab-up: ## engine, images, registry and HOSTS bare Debian 13 hosts (default 1); idempotent
	$(LAB) up --hosts "$(HOSTS)"

lab-down: ## remove every container, volume and network the lab made
	@$(LAB) down

lab-status: ## list the lab's containers
	@$(LAB) status

lab-images: ## build (or reuse) the lab's images only
	$(LAB) images

lab-clean: lab-down ## lab-down, then drop the cached images too
	@$(LAB) clean-cache

test: setup $(CORE_PREVIOUS_VENV)/.installed ## everything CI runs
	@# The offline checks (two at a time; --output-sync: each check's output comes whole, when it ends) beside
	@# the lab's images, then beside the labs and Molecule, which mostly wait on the engine.
	$(VENV)/bin/python -m tests.lab.parallel \
		--offline "$(MAKE) --no-print-directory -j2 --output-sync=target lint test-unit test-collection" --durations=10

test-unit: setup ## fast tests that need no engine
	$(VENV)/bin/pytest -m "not lab"

collection: setup ## build the Galaxy tarball and install it into an empty collections path (/tmp/pliers-deploy-build-*)
	rm -rf $(BUILD)
	$(VENV)/bin/ansible-galaxy collection build --output-path $(BUILD) .
	@# --force: the checkout itself is installed in the configured path (.venv/collections) already.
	$(VENV)/bin/ansible-galaxy collection install --force --offline --no-deps -p $(BUILD)/collections $(TARBALL)

$(CORE_PREVIOUS_VENV)/.installed:
	$(PYTHON_FOR_VENV) -m venv $(CORE_PREVIOUS_VENV)
	$(CORE_PREVIOUS_VENV)/bin/pip install -q ansible-core==$(CORE_PREVIOUS)
	touch $@

test-collection: collection $(CORE_PREVIOUS_VENV)/.installed ## Galaxy's importer, ansible-test sanity and units (both ansible-cores), docs and changelog lint
	@# Not the importer's own ansible-lint: make lint runs it on the same files (production profile), and the
	@# importer's gives up after 180 s without failing, which it does on a loaded machine.
	GALAXY_IMPORTER_RUN_ANSIBLE_LINT=false PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m galaxy_importer.main $(TARBALL)
	cd $(INSTALLED) && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" antsibull-docs lint-collection-docs --plugin-docs .
	$(VENV)/bin/antsibull-changelog lint
	mkdir -p $(INSTALLED)/tests/unit && cp -r tests/unit/plugins $(INSTALLED)/tests/unit/
	tools/ansible_test.sh $(VENV) $(INSTALLED)
	@# The target Pythons the current ansible-core covered are not run again with the previous one.
	tools/ansible_test.sh $(CORE_PREVIOUS_VENV) $(INSTALLED) $(VENV)

test-lab: setup $(CORE_PREVIOUS_VENV)/.installed ## tests against the real lab, side by side: each mode's Molecule scenario, then its release, backup, monitoring and fault tests on the same hosts; the test lab
	@# What the labs share (images, CA, SSH key) first; then each lab's tests in a process of its own, side by side.
	$(VENV)/bin/python -m tests.lab.parallel --durations=10

bench: setup ## measure deploys against raw Docker on a lab of its own: bench/results.{json,md} (about 30 min; not in make test)
	$(LAB) images > /dev/null
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

test-faults: setup $(CORE_PREVIOUS_VENV)/.installed ## the fault suite (tests/lab/test_resilience.py) alone, both modes, on the Molecule scenarios' stacks (make test runs it too)
	$(LAB) images > /dev/null
	$(VENV)/bin/pytest -m lab -p no:cacheprovider tests/lab/test_resilience.py --durations=10

test-molecule: setup ## the Molecule scenarios alone (default: compose on one host; swarm: four nodes, three of them managers)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/molecule test --scenario-name default
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/molecule test --scenario-name swarm

lint: setup ## ruff, yamllint and ansible-lint (production profile)
	$(VENV)/bin/ruff check lab tests plugins molecule roles bench tools
	$(VENV)/bin/ruff format --check lab tests plugins molecule roles bench tools
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/ansible-lint

clean: ## remove the venv and caches (the lab stays: see lab-down, lab-clean)
	rm -rf $(VENV) $(CORE_PREVIOUS_VENV) $(BUILD) .pytest_cache .ruff_cache
