"""The benchmarks' stand-ins still answer what the sync asks of a server: a change to the
sync's commands once left `bench/instructions.py` failing, found only when it was run."""

from __future__ import annotations

from typing import Any

import pytest

from bench import instructions
from capture import header_helper
from tests.mail import compose


class _NotCounting:
    """Stands for the callgrind toggle library: counts nothing."""

    def counting(self, on: int) -> None:
        pass

    def collecting(self) -> None:
        pass


def test_the_instruction_count_bench_syncs_its_stand_in_mailbox(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [
        compose(to=f"Bob <bob{n}@customer.example>", message_id=f"<m{n}@x>").as_bytes()
        for n in range(3)
    ]
    library: Any = _NotCounting()
    # The bench keeps every batch in its process; the tests after this one do not.
    monkeypatch.setattr(header_helper, "PARSE_ELSEWHERE", header_helper.PARSE_ELSEWHERE)

    instructions.sync(messages, library)

    assert capsys.readouterr().out.startswith("outcomes: {'hold': 3}")
