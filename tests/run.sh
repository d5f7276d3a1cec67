#!/usr/bin/env bash
# Everything the test suite needs, on a fresh Debian machine, then the suite.
# Installs Dovecot and PostgreSQL (the integration tests run real servers),
# systemd (to check the unit file) and a virtualenv in .venv with maild and
# its test tools; then lint, types, and the tests on SQLite and PostgreSQL.
# Extra arguments go to pytest:  tests/run.sh -k threading -x
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v dovecot >/dev/null 2>&1 || packages+=(dovecot-imapd dovecot-lmtpd)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || packages+=(postgresql)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
command -v python3 >/dev/null 2>&1 || packages+=(python3 python3-venv)
if ((${#packages[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing ${packages[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,postgres]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Integration tests must run here: a missing server is a failure, not a skip.
export MAILD_REQUIRE_SERVERS=1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
# The store-facing end-to-end tests once more, on PostgreSQL.
MAILD_TEST_DB=postgres .venv/bin/python -m pytest -p no:cacheprovider "$@" \
    tests/integration/test_ingest_e2e.py tests/integration/test_steward_e2e.py \
    tests/integration/test_clock_e2e.py tests/integration/test_store.py
