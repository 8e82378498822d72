# Two entry points: `make demo` runs the demo site, `make test` runs the test suite.
# Both create .venv with python3 and install the project into it on first use (again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean

demo: $(STAMP)
	$(VPY) -m project.run_demo

test: $(STAMP)
	$(VPY) -m pytest

install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# The stamp is newer than pyproject.toml once the install succeeded; a changed pyproject.toml reinstalls.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) var .test-db.sqlite3 .test-db.sqlite3-*
