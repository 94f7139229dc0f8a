"""The connection caps: at a cap the oldest connection not inside a request makes room."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sendvault.server.protocol import ConnectionLimits, ConnectionTable


@dataclass(eq=False)
class Conn:
    peer: str
    phase: str = "head"
    since: float = 0.0
    pushed: list[str] = field(default_factory=list)
    table: ConnectionTable | None = None

    def push_out(self, why: str) -> None:
        self.pushed.append(why)
        assert self.table is not None
        self.table.release(self)  # type: ignore[arg-type]


def _table(**limits: object) -> ConnectionTable:
    return ConnectionTable(ConnectionLimits(**limits))  # type: ignore[arg-type]


def _open(table: ConnectionTable, peer: str, phase: str = "head", since: float = 0.0) -> Conn:
    conn = Conn(peer, phase, since, table=table)
    assert table.admit(conn)  # type: ignore[arg-type]
    return conn


def test_at_the_address_cap_heads_still_arriving_go_first_oldest_first_then_idle_ones() -> None:
    table = _table(per_address=4)
    idle = _open(table, "a", "idle", since=1.0)
    old_head = _open(table, "a", "head", since=2.0)
    new_head = _open(table, "a", "head", since=5.0)
    busy = _open(table, "a", "request", since=0.0)
    _open(table, "b")  # another address is not touched
    _open(table, "a", since=6.0)
    assert old_head.pushed == ["address"]
    assert new_head.pushed == idle.pushed == busy.pushed == []
    assert table.count == 5
    _open(table, "a", "request", since=7.0)
    assert new_head.pushed == ["address"]
    _open(table, "a", "request", since=8.0)
    assert [c.pushed for c in (idle, busy)] == [[], []]  # the head opened at 6.0 went first
    _open(table, "a", "request", since=9.0)
    assert idle.pushed == ["address"]
    assert busy.pushed == []


def test_when_every_connection_of_an_address_is_busy_the_new_one_is_refused() -> None:
    table = _table(per_address=2)
    _open(table, "a", "request")
    _open(table, "a", "request")
    assert not table.admit(Conn("a", table=table))  # type: ignore[arg-type]
    assert table.count == 2


def test_the_total_cap_pushes_out_the_oldest_idle_of_any_address() -> None:
    table = _table(per_address=10, total=2)
    old = _open(table, "a", "idle", since=1.0)
    _open(table, "b", "request", since=0.0)
    _open(table, "c")
    assert old.pushed == ["total"]
    assert table.saturation() is None
    for conn in list(table._by_address.values()):
        for c in conn:
            c.phase = "request"  # type: ignore[attr-defined]
    assert table.saturation() == "connections"


def test_trusted_proxies_are_not_capped_per_address() -> None:
    table = _table(per_address=1, exempt=(ipaddress.ip_network("10.0.0.0/8"),))
    for _ in range(5):
        _open(table, "10.1.2.3", "request")
    assert table.count == 5
