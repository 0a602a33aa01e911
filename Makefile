# Two commands for a newcomer: `make run` and `make test`. Both do their own set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint schema setup browser migrate seed demo-user sandbox check bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

# A working copy gets everything (tests, tools, the local process runner); production installs requirements.txt only.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)
	mkdir -p var/celery/broker var/celery/processed var/celery/control

migrate: setup
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_sandbox
	$(PY) manage.py demo_story
	$(PY) manage.py provision_webhook --only-sandbox --url http://127.0.0.1:8000/webhooks/epilot/

demo-user: migrate
	$(PY) manage.py create_demo_user

## run: set up, migrate, seed the sandbox, create the demo login, start web + worker + beat
run: seed demo-user
	@echo ""
	@echo "  Ausbau Backoffice: http://127.0.0.1:8000/admin/   login: demo / wuelfrath-demo"
	@echo "  epilot: embedded sandbox unless EPILOT_API_TOKEN or EPILOT_API_URL is set"
	@echo "  the sandbox also answers on http://127.0.0.1:8765 and sends its changes to /webhooks/epilot/"
	@echo ""
	$(VENV)/bin/honcho -f Procfile.dev start

# The browser test drives Debian's chromium; as root this installs it, otherwise it says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing chromium (Debian) for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: the browser test is skipped without Debian's chromium (sudo apt-get install chromium)"; fi; }

## lint: ruff over the whole tree (configuration in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check .

## test: set up, lint, check that the models need no new migration, then the whole suite (DATABASE_URL picks PostgreSQL)
test: setup browser lint
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest $(PYTEST_ARGS)

## sandbox: serve the epilot sandbox on 127.0.0.1:8765 for other processes
sandbox: seed
	$(PY) manage.py epilot_sandbox --port 8765

## schema: regenerate docs/openapi.yaml (a test keeps it in sync with the code)
schema: setup
	$(PY) manage.py spectacular --validate --lang en --file docs/openapi.yaml

check: setup
	$(PY) manage.py epilot_check

bench: setup
	$(PY) bench/client_paging.py

clean:
	rm -rf $(VENV) var .pytest_cache
