# mediaengine developer commands.  `make demo` runs the demo topology; `make test` runs what CI runs.
# Both first call scripts/bootstrap.sh, which installs Debian packages and the .venv only when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bootstrap-stamp
DEMO_SECONDS ?= 10
DEMO_OUTPUTS := out/demo.mp4 out/snapshot.png

.PHONY: help bootstrap demo test checks lint typecheck unit pytest bench clean distclean

help:
	@echo "make demo       install what is missing, run topologies/demo.yaml for $(DEMO_SECONDS) s into out/"
	@echo "make test       install what is missing, then lint + type check + all tests + benchmark smoke run"
	@echo "make lint       ruff check engine actors tools tests"
	@echo "make typecheck  mypy engine"
	@echo "make unit       pytest tests/unit (fast, no servers)"
	@echo "make pytest     pytest tests (everything)"
	@echo "make bench      python -m tools.bench --quick"
	@echo "make clean      remove out/ and caches (make distclean also removes $(VENV))"

# Always run: it checks Debian packages every time and skips pip when the stamp is fresh.
bootstrap:
	@bash scripts/bootstrap.sh

# For the single-step targets: bootstrap only if the venv is missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	@bash scripts/bootstrap.sh

demo: bootstrap
	@mkdir -p out && rm -f $(DEMO_OUTPUTS)
	$(VENV)/bin/mediaengine run topologies/demo.yaml --duration $(DEMO_SECONDS)
	@echo
	@status=0; for f in $(DEMO_OUTPUTS); do \
	    if [ -f "$$f" ]; then echo "demo output: $$f ($$(du -h "$$f" | cut -f1))"; \
	    else echo "demo output missing: $$f" >&2; status=1; fi; \
	done; \
	if [ -f out/demo.mp4 ] && command -v ffprobe >/dev/null; then \
	    echo "ffprobe out/demo.mp4:"; \
	    ffprobe -v error -of compact=p=0 \
	        -show_entries stream=codec_type,codec_name,width,height,r_frame_rate,sample_rate,channels \
	        -show_entries format=duration,size,bit_rate out/demo.mp4 | sed 's/^/  /'; \
	fi; \
	exit $$status

# -k: run every check even when an earlier one fails, so one CI run shows all problems.
test: bootstrap
	@if $(MAKE) --no-print-directory -k checks; then echo "make test: all checks passed"; \
	else echo "make test: FAILED (see the errors above)" >&2; exit 1; fi

checks: lint typecheck pytest bench

lint: $(STAMP)
	$(VENV)/bin/ruff check engine actors tools tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy engine

unit: $(STAMP)
	$(PY) -m pytest tests/unit

pytest: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	@if [ -f tools/bench/__main__.py ]; then \
	    echo "$(PY) -m tools.bench --quick"; $(PY) -m tools.bench --quick; \
	else echo "bench: tools/bench/__main__.py does not exist yet, skipped"; fi

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
