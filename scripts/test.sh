#!/usr/bin/env bash
# The test command: install Mailroom with its test tools into .venv, then lint, type-check
# and run the whole suite on SQLite, and on PostgreSQL too (side by side) when
# MAILROOM_TEST_POSTGRES_URL names a server (.ci/run starts a throwaway one). Extra arguments
# go to pytest. Each pass runs its tests in MAILROOM_TEST_WORKERS processes (pytest-xdist;
# default 2): a test mostly waits (on its service's threads, sockets, child processes), and one
# process alone kept a core a fifth busy.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${MAILROOM_TEST_WORKERS:-2}

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y --no-install-recommends python3-venv
      python3 -m venv .venv
    else
      echo "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
# The versions the suite last passed on (constraints.txt; scripts/update-constraints).
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'

echo "== ruff =="
.venv/bin/ruff check .
echo "== mypy --strict =="
.venv/bin/mypy app capture policies migrations tests bench

if [ -z "${MAILROOM_TEST_POSTGRES_URL:-}" ]; then
  echo "== tests on SQLite =="
  env -u MAILROOM_TEST_DATABASE_URL .venv/bin/pytest -n "$workers" "$@"
  echo "PostgreSQL run skipped: MAILROOM_TEST_POSTGRES_URL not set (.ci/run sets it)"
  exit 0
fi

# Both databases: the two passes run side by side, each in its own temporary folder. A test
# waits on sockets and child processes as much as it computes, so on 2 cores the pair takes
# about as long as the PostgreSQL pass alone (10 min with two workers each, from a fresh clone).
# PostgreSQL's output follows as it comes; SQLite's is printed once both are done.
logs=$(mktemp -d /tmp/mailroom-tests.XXXXXX)
sqlite_pid=
stop() {
  if [ -n "$sqlite_pid" ]; then kill "$sqlite_pid" 2>/dev/null || true; fi
  rm -rf "$logs"
}
trap stop EXIT
echo "== tests on SQLite (in the background) and on PostgreSQL =="
env -u MAILROOM_TEST_DATABASE_URL .venv/bin/pytest -n "$workers" --basetemp "$logs/sqlite" "$@" \
  > "$logs/sqlite.log" 2>&1 &
sqlite_pid=$!
postgresql_status=0
MAILROOM_TEST_DATABASE_URL="$MAILROOM_TEST_POSTGRES_URL" .venv/bin/pytest -n "$workers" \
  --basetemp "$logs/postgresql" "$@" || postgresql_status=$?
sqlite_status=0
wait "$sqlite_pid" || sqlite_status=$?
sqlite_pid=
echo "== tests on SQLite =="
cat "$logs/sqlite.log"
echo "== exit status: SQLite $sqlite_status, PostgreSQL $postgresql_status =="
[ "$sqlite_status" -eq 0 ] && [ "$postgresql_status" -eq 0 ]
