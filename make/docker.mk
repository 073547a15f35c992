# The docker-compose stack: its Node tools, its secrets, its static checks (docs/docker.md).
# Included by the Makefile; `make setup` depends on `tools`.

TOOLS_DIR   := tools
TOOLS_STAMP := $(TOOLS_DIR)/node_modules/.installed

.PHONY: tools env compose-policies compose-check

tools: $(TOOLS_STAMP)  ## Node tools of the static checks (dclint, pinned by tools/package-lock.json)
# `npm ci` installs exactly the lock; the stamp makes later runs no-ops (offline).
$(TOOLS_STAMP): $(TOOLS_DIR)/package.json $(TOOLS_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found (it installs dclint for the compose checks)"; exit 1; }
	cd $(TOOLS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Plain python3 on purpose: lakehouse.compose needs only the standard library for this, so the
# secrets can be made on a machine that runs only Docker.
env:  ## create .env for docker compose with random secrets (an existing one only gains missing variables)
	@command -v python3 >/dev/null || { echo "error: python3 not found"; exit 1; }
	python3 -m lakehouse.compose env .env.example .env

compose-policies: venv  ## re-render docker/minio (policies, buckets) from lakehouse.storage.ROLE_GRANTS
	$(BIN)/python -m lakehouse.compose policies docker/minio

compose-check: venv tools  ## static checks of docker-compose.yml and the Dockerfiles
	$(BIN)/python -m pytest tests/docker $(PYTEST_ARGS)
