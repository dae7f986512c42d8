# voipsec — the two commands in the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./voipsec-data

.PHONY: run test test-single venv test-deps peers lint unit integration bench clean

$(BIN)/voipsec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/voipsec

run: venv
	$(BIN)/voipsec serve --dir $(DATA)

peers:
	bash scripts/install-peers.sh

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Test processes: the suite waits on real peers as much as it computes, so more
# workers than cores pay; --dist loadfile keeps a module's tests (and its
# module-scoped server) on one worker. `make test WORKERS=0` runs serially. Tests
# marked `alone` (legitimate load at a fixed rate) run afterwards, by themselves.
# The suite runs with the defaults (sip.workers and media.workers one per core); the
# integration files where the number of processes matters run again with
# VOIPSEC_TEST_WORKERS=1 (one signaling process, one relay process). `make test-single`
# runs the whole integration suite that way.
WORKERS ?= 4
PROCESS_TESTS = $(addprefix tests/integration/,test_workers.py test_workers_state.py \
	test_media_workers.py test_calls.py test_media.py test_security_media.py \
	test_security_sip.py test_connection_limits.py test_monitor.py test_monitor_exports.py \
	test_cdr_postgres.py)

test: venv peers lint
	$(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile -m "not alone" tests
	VOIPSEC_TEST_WORKERS=1 $(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile \
		-m "not alone" $(PROCESS_TESTS)
	$(BIN)/pytest -q -p no:cacheprovider -m alone tests/integration

test-single: venv peers
	VOIPSEC_TEST_WORKERS=1 $(BIN)/pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile \
		-m "not alone" tests/integration

bench: venv peers
	$(BIN)/python bench/register_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
