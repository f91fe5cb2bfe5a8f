# spfem — one command each: `make demo`, `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Exact pins on one pip command line: torch==2.13.0 resolves to the local CPU wheel.
NODEPS  := mediapipe==0.10.21 face-alignment==1.5.0 syncnet-python==0.2.3 fer==25.10.3

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(NODEPS)
	@$(PY) -c "import importlib.metadata as m; bad=[d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].startswith('opencv') and d.metadata['Name']!='opencv-python-headless']; assert not bad, f'second OpenCV variant installed: {bad}'"
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest tests

demo: $(STAMP)
	$(PY) -m spfem_cli.demo

bench: $(STAMP)
	$(PY) -m spfem_cli.benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check spfem_cli models tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
