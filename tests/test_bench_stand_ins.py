"""The benchmarks' stand-ins still answer what the sync asks of a server: a change to the
sync's commands once left `bench/instructions.py` failing, found only when it was run."""

from __future__ import annotations

from typing import Any

import pytest

from bench import group_commit, instructions
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


def test_the_group_commit_bench_commits_every_batch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/group_commit.py runs the writer's own commit_batch: it fails if a batch does."""
    monkeypatch.setattr("sys.argv", ["group_commit", "--sizes", "1,3", "--messages", "6"])

    group_commit.main()

    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["batch of   1", "batch of   3"]
    assert all("(6 messages)" in line for line in lines)
