#!/usr/bin/env bash
# The test command: install Mailroom with its test tools into .venv, then lint, type-check
# and run the whole suite on SQLite, and again on PostgreSQL when MAILROOM_TEST_POSTGRES_URL
# names a server (.ci/run starts a throwaway one). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

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
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff =="
.venv/bin/ruff check .
echo "== mypy --strict =="
.venv/bin/mypy app capture policies migrations tests bench

echo "== tests on SQLite =="
env -u MAILROOM_TEST_DATABASE_URL .venv/bin/pytest "$@"

if [ -n "${MAILROOM_TEST_POSTGRES_URL:-}" ]; then
  echo "== tests on PostgreSQL =="
  MAILROOM_TEST_DATABASE_URL="$MAILROOM_TEST_POSTGRES_URL" .venv/bin/pytest "$@"
else
  echo "PostgreSQL run skipped: MAILROOM_TEST_POSTGRES_URL not set (.ci/run sets it)"
fi
