"""ConnectionShares: the serving processes' shared connection counts, as
each process reads them (one created memory, several attached views, as
`sonae serve` and its serving processes hold them)."""

from __future__ import annotations

import os
import time

import pytest

from fallback.connection_shares import SLOT, STALE_S, STARTING, ConnectionShares


@pytest.fixture
def shares():
    """The server's view of three slots, and each serving process's."""
    server = ConnectionShares.create(3)
    processes = [ConnectionShares(server.memory_fd, server.wake_fds, slot) for slot in range(3)]
    yield server, processes
    for fd in server.fds():
        os.close(fd)


def woken(shares: ConnectionShares, slot: int) -> bool:
    try:
        return os.eventfd_read(shares.wake_fds[slot]) > 0
    except BlockingIOError:
        return False


def test_a_process_takes_the_next_connection_only_while_none_holds_fewer(shares):
    server, (first, second, third) = shares
    assert first.take_next(0, accepting=True)  # alone so far: slots no process has looked at do not count
    assert second.take_next(2, accepting=True) is False
    assert third.take_next(0, accepting=True)
    assert first.take_next(1, accepting=True) is False
    assert third.take_next(1, accepting=True)  # as few as the fewest
    assert third.take_next(2, accepting=True) is False
    assert first.take_next(0, accepting=True)  # a connection of its closed
    assert server.counts() == [0, 2, 2]


def test_equal_counts_all_take_and_a_process_waitress_holds_back_does_not(shares):
    _, (first, second, _) = shares
    assert first.take_next(4, accepting=True) and second.take_next(4, accepting=True)
    assert second.take_next(4, accepting=False) is False  # at its connection_limit


def test_stopping_wakes_every_other_process_once(shares):
    _, (first, second, third) = shares
    second.take_next(0, accepting=True)
    assert first.take_next(0, accepting=True)
    assert not any(woken(first, slot) for slot in range(3))
    assert first.take_next(1, accepting=True) is False
    assert [woken(first, slot) for slot in range(3)] == [False, True, True]
    assert first.take_next(1, accepting=True) is False  # still not taking: no second wake
    assert [woken(first, slot) for slot in range(3)] == [False, False, False]
    assert first.take_next(0, accepting=True)


def test_a_process_that_stopped_looking_does_not_hold_the_others_back(shares):
    _, (first, second, _) = shares
    assert second.take_next(0, accepting=True)
    assert first.take_next(1, accepting=True) is False
    SLOT.pack_into(second.memory, 1 * SLOT.size, 0, time.monotonic() - STALE_S - 0.5)  # stopped or wedged since
    assert first.take_next(1, accepting=True)


def test_the_server_clears_an_ended_process_and_wakes_the_others(shares):
    server, (first, second, third) = shares
    second.take_next(0, accepting=True)
    assert first.take_next(3, accepting=True) is False
    for slot in range(3):
        woken(server, slot)  # the wakes of that stop, read
    server.clear(1)
    assert server.counts() == [3, None, None]
    assert [woken(server, slot) for slot in range(3)] == [True, False, True]
    assert first.take_next(3, accepting=True)


def test_a_serving_process_gets_every_descriptor_it_needs(shares):
    server, _ = shares
    arguments = server.serving_process_arguments(2)
    assert arguments == ["--shares-fd", str(server.memory_fd), "--wake-fds", ",".join(map(str, server.wake_fds)), "--slot", "2"]
    assert set(server.fds()) == {server.memory_fd, *server.wake_fds}


def test_a_process_starting_counts_as_holding_none_until_it_reports(shares):
    server, (first, second, _) = shares
    server.starting(1)
    assert first.take_next(0, accepting=True)
    assert first.take_next(1, accepting=True) is False  # its turn is the starting one's
    assert second.take_next(2, accepting=True) is False  # ready, it reports
    server.keep_starting(1)  # then its own report stands
    assert server.counts()[1] == 2
    assert first.take_next(1, accepting=True)


def test_a_start_no_longer_kept_fresh_stops_holding_the_others_back(shares):
    server, (first, _, _) = shares
    server.starting(1)
    assert first.take_next(5, accepting=True) is False
    SLOT.pack_into(server.memory, 1 * SLOT.size, STARTING, time.monotonic() - STALE_S - 0.5)  # STARTING_S passed
    assert first.take_next(5, accepting=True)
