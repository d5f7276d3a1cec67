#!/usr/bin/env bash
# Everything the test suite needs, on a fresh Debian machine, then the suite.
# Installs what is missing of Dovecot and PostgreSQL (the integration tests
# run real servers), systemd (to check the unit file) and a virtualenv in
# .venv with maild and its test tools; then lint, types, and the tests on
# SQLite and PostgreSQL.
# Extra arguments go to pytest:  tests/run.sh -k threading -x
set -euo pipefail
cd "$(dirname "$0")/.."

# Each file the tests run, and the Debian package that brings it: checked one
# by one, since a half-installed Dovecot (dovecot-core without dovecot-lmtpd)
# starts fine and then fails every test that talks to it.
packages=()
missing=()
need() {  # need PACKAGE FILE-OR-COMMAND...: install PACKAGE unless all are there
    local package=$1 thing
    shift
    for thing in "$@"; do
        if [[ $thing == /* ]]; then
            # a path, globs allowed (PostgreSQL's tools live under its version)
            compgen -G "$thing" >/dev/null && continue
        else
            command -v "$thing" >/dev/null 2>&1 && continue
            [ -x "/usr/sbin/$thing" ] && continue  # not on a non-root PATH
        fi
        packages+=("$package")
        missing+=("$thing")
        return
    done
}
need dovecot-core dovecot doveadm
need dovecot-imapd /usr/lib/dovecot/imap
need dovecot-lmtpd /usr/lib/dovecot/lmtp
need postgresql '/usr/lib/postgresql/*/bin/pg_ctl' '/usr/lib/postgresql/*/bin/initdb'
need postgresql-client psql
need systemd systemd-analyze
need openssl openssl  # the IMAPS tests make a throwaway certificate
need python3 python3
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || { packages+=(python3-venv); missing+=(venv); }
if ((${#packages[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "missing ${missing[*]}: installing ${packages[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,postgres]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Integration tests must run here: a missing server is a failure, not a skip.
# -rfEs: the summary lists failures, errors and each skip with its reason.
export MAILD_REQUIRE_SERVERS=1
.venv/bin/python -m pytest -p no:cacheprovider -rfEs "$@"
# The store-facing end-to-end tests once more, on PostgreSQL. Arguments such
# as -k may select none of them: pytest's "no tests collected" (5) is fine.
status=0
MAILD_TEST_DB=postgres .venv/bin/python -m pytest -p no:cacheprovider -rfEs "$@" \
    tests/integration/test_ingest_e2e.py tests/integration/test_steward_e2e.py \
    tests/integration/test_clock_e2e.py tests/integration/test_store.py \
    tests/integration/test_cli.py tests/integration/test_abuse.py \
    tests/integration/test_handbook.py tests/integration/test_reports_clock.py \
    tests/integration/test_batch.py tests/integration/test_scheduler_batch.py \
    tests/integration/test_outbox_claims.py || status=$?
if [ "$status" = 5 ]; then
    echo "no PostgreSQL tests selected by: $*" >&2
elif [ "$status" != 0 ]; then
    exit "$status"
fi
