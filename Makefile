# Two entry points: `make demo` runs the demo site, `make test` runs the test suite.
# Both create .venv with python3 and install the project into it on first use (again when pyproject.toml changes).

PYTHON ?= python3
# Browser tests drive Debian's Chromium (never a browser Playwright downloads).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean

demo: $(STAMP)
	$(VPY) -m project.run_demo

# The app's suite (tests/), then the demo project's (project/demo/tests/, with the demo's settings).
test: $(STAMP) $(CHROMIUM)
	$(VPY) -m pytest
	$(VPY) -m pytest --ds=project.demo.tests.settings project/demo/tests

install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# The stamp is newer than pyproject.toml once the install succeeded; a changed pyproject.toml reinstalls.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -e ".[test]"
	touch $(STAMP)

# The browser alone: Playwright drives it over CDP (no chromium-driver), and headless it needs none of the
# recommends (cups, samba, a desktop's tools). Its own dependencies bring a font (fonts-dejavu-core via fontconfig).
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (apt-get, without recommends) ..."
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium

clean:
	rm -rf $(VENV) var .test-db.sqlite3 .test-db.sqlite3-*
