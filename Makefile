# ocrstream — `make demo` runs the main job, `make test` runs the tests. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Tesseract with Korean + English and orientation detection (osd), the headers tesserocr builds against,
# fonts for the sample batch; prometheus for promtool, which tests the alert rules; chromium and its driver for
# the console's browser tests (browsers cannot be downloaded here).
APT_PACKAGES := tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng tesseract-ocr-script-hang tesseract-ocr-osd \
	libtesseract-dev libleptonica-dev pkg-config fonts-nanum g++ prometheus chromium chromium-driver wrk
PYTEST_ARGS ?=

.PHONY: demo stop test chaos bench bench-quality system-deps venv kafka-jars stack-up stack-down stack-status schemas lint-imports

demo: venv kafka-jars  ## start the stack + services, OCR a sample batch, print the results
	$(PY) -m demo.run

stop:  ## stop the demo's services and the dev stack
	-$(PY) -m demo.run --stop
	$(PY) -m deploy.devstack down

test: venv kafka-jars  ## the test suite on the real stack (started and stopped by the test session if not running)
	$(PY) -m pytest $(PYTEST_ARGS)

chaos: venv kafka-jars  ## the fault tests at full size: SIGKILLs, Kafka/Postgres/S3 outages of 30 s, a broker of 3 killed
	OCRSTREAM_CHAOS_SCALE=full $(PY) -m pytest -m chaos $(PYTEST_ARGS)

bench: venv kafka-jars  ## every benchmark (pipeline, quality, poison, sse_idle, console, large_batch); regenerates bench/RESULTS.md
	$(PY) -m bench.report

bench-quality: venv  ## OCR quality per category (CER, word-box IoU) against issue 17's floors
	$(PY) -m bench.quality

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

venv: system-deps $(VENV)/.installed

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# tesserocr from source: the PyPI wheel bundles its own libtesseract that finds no Korean model.
	$(VENV)/bin/pip install -q --no-binary tesserocr -e '.[dev]'
	# The client SDK and CLI, a distribution of their own (what users install).
	$(VENV)/bin/pip install -q -e clients/python
	touch $@

kafka-jars: venv
	$(PY) -m deploy.devstack fetch-kafka

stack-up: venv kafka-jars
	$(PY) -m deploy.devstack up

stack-down:
	$(PY) -m deploy.devstack down

stack-status:
	$(PY) -m deploy.devstack status

schemas: venv  ## regenerate schemas/json/*.json from the models
	$(PY) -m schemas.export

lint-imports: venv
	$(VENV)/bin/lint-imports
