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
# PROCESS_TESTS, and what one process changes for each: test_media_workers (the one
# relay worker killed is the whole relay), test_calls (both legs in one process, no
# handoff), test_media and test_security_media (one relay worker owns the whole port
# range), test_security_sip and test_connection_limits (bans, IDS and per-source counts
# held by the only worker, on a listener without SO_REUSEPORT), test_monitor and
# test_monitor_exports (fraud counters, metrics and exports with no cross-worker feed;
# kill -9 of a server with no signaling child). Not rerun: test_workers and
# test_workers_state set sip.workers = 2 themselves (the second pass only changed
# media.workers, which none of their assertions is about); test_cdr_postgres (each
# process has its own CDR writer, the same code in both modes: one process changes only
# which writer inserts the row).
WORKERS ?= 4
PROCESS_TESTS = $(addprefix tests/integration/,test_media_workers.py test_calls.py \
	test_media.py test_security_media.py test_security_sip.py test_connection_limits.py \
	test_monitor.py test_monitor_exports.py)

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
