# Each target creates .venv on first use (and again if pyproject.toml changes), then runs.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test test-slow bench lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 -q --dist loadscope --durations=20

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/env_throughput.py

lint: $(STAMP)
	$(PY) -m ruff check .
