# detlearn: every target sets up .venv itself when it is missing or stale.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test lab outputs lint format clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test,dev]"
	@touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open $(CURDIR)/_build/html/index.html in a browser."

# A generous limit per cell: a chapter that hangs fails instead of stalling CI.
test: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-cell-timeout=600

# Jupyter refuses to start as root (common in containers) unless told it may.
lab: $(STAMP)
	$(BIN)/jupyter lab book/ $(if $(filter 0,$(shell id -u)),--allow-root,)

outputs: $(STAMP)
	$(BIN)/python scripts/make_outputs.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf _build .pytest_cache .ruff_cache
