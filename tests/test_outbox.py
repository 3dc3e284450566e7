"""The byte accounting of events waiting for slow clients (edge_agent/outbox.py), driven by a
send function that refuses while a client "does not read". The daemon-level behaviour (real
sockets, real speech, real chat) is in test_hardening.py and test_speech.py."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edge_agent.outbox import ITEM_OVERHEAD, Backlog, Outbox, Sent

OH = ITEM_OVERHEAD  # what each waiting event costs beyond its bytes


@dataclass
class FakeClient:
    key: str
    outbox: Outbox = field(default_factory=Outbox)
    reading: bool = False
    got: list[bytes] = field(default_factory=list)


def backlog(per_client: int, total: int):
    overruns: list[tuple[str, list[str]]] = []
    drained: list[bool] = []

    def send_now(client: FakeClient, frames: list[bytes]) -> Sent:
        if not client.reading:
            return Sent.FULL
        client.got.extend(frames)
        return Sent.SENT

    b = Backlog(per_client=per_client, total=total, send_now=send_now,
                on_overrun=lambda c, rids: overruns.append((c.key, rids)), on_drained=lambda: drained.append(True))
    return b, overruns, drained


def test_waiting_events_go_out_in_order_when_the_client_reads():
    async def main():
        b, overruns, drained = backlog(per_client=4 * (500 + OH), total=40_000)
        a = FakeClient("a")
        for n in range(5):
            b.hold(a, [b"%d" % n * 100], f"r{n}", final=n == 4)
        assert b.bytes == 500 + 5 * OH and b.paused(a) and not overruns  # pause at a quarter of the budget
        await asyncio.sleep(0.05)
        assert b.bytes == 500 + 5 * OH  # still not reading: kept
        a.reading = True
        await asyncio.sleep(0.1)
        assert [g[:1] for g in a.got] == [b"0", b"1", b"2", b"3", b"4"]
        assert b.bytes == 0 and not b.waiting and drained and not b.paused(a)
    asyncio.run(main())


def test_a_client_over_its_budget_is_overrun_and_its_finished_requests_named():
    async def main():
        b, overruns, _ = backlog(per_client=1000 + 2 * OH, total=10_000)
        a = FakeClient("a")
        b.hold(a, [b"x" * 400], "done", final=True)
        b.hold(a, [b"x" * 400], "streaming", final=False)
        assert not overruns
        b.hold(a, [b"x" * 400], "streaming", final=False)
        assert overruns == [("a", ["done"])]
        assert b.bytes == 0 and a.outbox.bytes == 0 and not a.outbox and b.status()["overruns"] == 1
        b.close()
    asyncio.run(main())


def test_past_the_total_the_client_holding_most_is_overrun():
    async def main():
        b, overruns, _ = backlog(per_client=1000 + OH, total=1500 + 3 * OH)
        small, big = FakeClient("small"), FakeClient("big")
        b.hold(small, [b"x" * 300], "s", final=True)
        b.hold(big, [b"x" * 1000], "b1", final=True)
        assert not overruns
        b.hold(small, [b"x" * 400], "s2", final=True)  # 1700 in all: `big` holds most
        assert overruns == [("big", ["b1"])]
        assert b.bytes == 700 + 2 * OH and small.outbox.bytes == 700 + 2 * OH
        b.close()
    asyncio.run(main())


def test_a_client_that_is_gone_while_waiting_is_forgotten():
    async def main():
        gone = FakeClient("gone")
        b = Backlog(per_client=1000, total=4000, send_now=lambda c, f: Sent.GONE,
                    on_overrun=lambda c, r: None, on_drained=lambda: None)
        b.hold(gone, [b"x" * 10], "r", final=True)
        await asyncio.sleep(0.05)
        assert b.bytes == 0 and not b.waiting
    asyncio.run(main())
