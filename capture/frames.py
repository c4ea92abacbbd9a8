"""Length-prefixed pickles between two processes of this program over a socket pair: the SMTP
writer process (app.ingest) and a mailbox sync's header parser (capture.header_helper).

Only for sockets nothing else can reach (an unnamed socket pair, inherited by the child
alone): a pickle is code. Frames carry plain values (tuples, strings, bytes): pickling
dataclasses costs four times as much."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")  # each frame: its length, then a pickle


def frame(value: object) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def read_frame(sock: socket.socket) -> Any:
    """The next value, read blocking; EOFError when the other end has gone."""
    (size,) = HEADER.unpack(_exactly(sock, HEADER.size))
    return pickle.loads(_exactly(sock, size))  # noqa: S301


async def read_frame_from(reader: asyncio.StreamReader) -> Any:
    """The next value from an asyncio stream; IncompleteReadError when the other end has gone."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))  # noqa: S301


def _exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        try:
            got = sock.recv_into(view)
        except ConnectionError:
            raise EOFError from None
        if not got:
            raise EOFError
        view = view[got:]
    return bytes(buffer)
