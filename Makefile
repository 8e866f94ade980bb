# Set-up and run targets. Everything installs into .venv inside the repo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the builds this project is tested with (CPU works; on a
# CUDA machine pip picks the CUDA build of the same version).
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_DATA := data/synthetic
DEMO_IMAGES := 2000
# Debian's labelme-examples ships a real COCO file (3 VOC photos, GPL-3+, so fetched, not
# vendored); tests/unit/test_coco.py checks the reader against pycocotools on it.
LABELME := .scratch/labelme-examples

.PHONY: install demo test lint bench schema fixtures browser docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/pip install --quiet --no-cache-dir $(TORCH)
	$(BIN)/pip install --quiet --no-cache-dir -e ".[demo,test,docs]"
	touch $@

demo: install
	test -f $(DEMO_DATA)/index.csv || $(BIN)/ray-dissect make-dataset $(DEMO_DATA) --images $(DEMO_IMAGES) --seed 0
	$(BIN)/ray-dissect run jobs/demo.yaml --out runs/demo

fixtures:
	@test -f $(LABELME)/.done || { mkdir -p $(LABELME) && cd $(LABELME) \
	  && apt-get download labelme-examples >/dev/null 2>&1 \
	  && dpkg-deb -x labelme-examples_*.deb . && touch .done; } \
	  || echo "labelme-examples not fetched (needs apt-get); the test that uses it is skipped"

# Debian's chromium drives the report's browser tests (tests/unit/report/test_browser.py);
# they skip without it, and CI (.ci/run) requires it.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium not installed (needs apt-get); the browser tests are skipped"

test: install fixtures browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_extraction.py
	$(BIN)/python benchmarks/bench_report.py

# The documentation site into site/ (tests/unit/docs builds it too, strictly, in make test).
docs: install
	$(BIN)/mkdocs build --strict

schema: install
	$(BIN)/ray-dissect schema --out schemas
