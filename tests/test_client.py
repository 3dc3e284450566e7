"""One client: AsyncClient has every operation, and Client offers the same ones with the same
signatures and the same return shapes (checked against a real daemon)."""
from __future__ import annotations

import asyncio
import inspect

import pytest

from edge_agent.client import COROUTINES, ITERATORS, AsyncClient, Client

from .daemon_util import Daemon
from .test_daemon import base_sections, wait_for


def public(cls) -> set[str]:
    return {name for name, member in vars(cls).items() if not name.startswith("_") and callable(member)}


def test_every_async_operation_is_offered_blocking_with_the_same_signature():
    operations = public(AsyncClient) - {"open", "close", "new_id"}
    assert operations == set(COROUTINES) | set(ITERATORS)
    for name in operations:
        assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name)), name
    for name in ITERATORS:
        assert inspect.isasyncgenfunction(getattr(AsyncClient, name)) or \
            "AsyncIterator" in str(inspect.signature(getattr(AsyncClient, name)).return_annotation), name


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("client-daemon"), base_sections(int4_package))
    yield d
    d.stop()


def test_both_clients_return_the_same_shapes(daemon):
    prompt = {"prompt": "Name a colour.", "max_tokens": 6}
    with Client(daemon.address, timeout=60) as blocking:
        pieces = list(blocking.chat(**prompt))
        blocking_result = blocking.last_result
        blocking_kinds = [e["event"] for e in blocking.chat_events(**prompt)]
        blocking_ping = blocking.ping()
        blocking_session = blocking.sessions("create")
        blocking_models = blocking.models()

    async def run():
        async with AsyncClient(daemon.address, timeout=60) as client:
            async_pieces = [piece async for piece in client.chat(**prompt)]
            result = client.last_result
            kinds = [e["event"] async for e in client.chat_events(**prompt)]
            return async_pieces, result, kinds, await client.ping(), await client.sessions("create"), \
                await client.models()

    async_pieces, async_result, async_kinds, async_ping, async_session, async_models = asyncio.run(run())
    assert all(isinstance(p, str) for p in pieces + async_pieces)
    assert "".join(pieces) == "".join(async_pieces) == blocking_result["text"] == async_result["text"]  # greedy
    assert blocking_kinds == async_kinds and blocking_kinds[0] == "accepted" and blocking_kinds[-1] == "result"
    assert blocking_ping is async_ping is True
    assert set(blocking_session) == set(async_session) and blocking_session["session"] != async_session["session"]
    assert blocking_models["models"] == async_models["models"]


def test_a_stream_left_early_is_cancelled_on_the_daemon(daemon):
    with Client(daemon.address, timeout=60) as client:
        stream = client.chat("Tell me everything.", max_tokens=2000)
        next(stream)
        stream.close()  # the caller stops reading: the request is cancelled, not left running
        wait_for(lambda: client.status()["inflight"] == 0, timeout=5)
