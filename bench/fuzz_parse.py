"""Fuzz, by hand: parse, extraction and the bundled policy under atheris (coverage-guided).

    .venv/bin/pip install -e '.[fuzz]'
    mkdir -p var/fuzz-corpus
    .venv/bin/python bench/fuzz_parse.py -max_total_time=300 var/fuzz-corpus tests/fixtures

libFuzzer's own flags and corpus folders go after the script. It writes the inputs it finds to
the FIRST folder: give it a scratch one (var/ is not versioned), and tests/fixtures as a seed.
Any exception that escapes (or a libFuzzer timeout, -timeout=N seconds) stops the run and
writes the input to crash-*/timeout-*: add it to tests/test_fuzz_parse.py once fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["capture", "policies"]):
    # Imported here to be instrumented; used through understand().
    from capture import content, parse, people, signatures, threads  # noqa: F401
    from policies import engine, observe  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*
from tests.test_fuzz_parse import understand


def test_one_input(data: bytes) -> None:
    understand(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
