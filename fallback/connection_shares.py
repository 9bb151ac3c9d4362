"""How the serving processes of a multi-process `sonae serve` share the
connections: each accepts on the one listening socket only while it holds no
more open connections than any other.

Left to the kernel, whichever process is awake first takes a burst of
connections: wrk's eight came [1, 8], [4, 5], [2, 7] and [9] over four
starts, and with all of them on one process the box answered at one
interpreter's rate (README, counter search at 4M). Counters' browsers keep
their connections for minutes, so an uneven spread lasts.

The processes see each other's counts in a small shared memory (one slot
each: open connections, and when it last looked). A process that stops
accepting wakes the others through their eventfds, since the one now with
the fewest may be asleep in poll() having declined a moment ago; without
that wake a connection could wait for its loop's timeout. A slot not
refreshed for STALE_S seconds (a process stopped or wedged) does not count,
so that a process holds the others back no longer than that; the server
clears a dead process's slot and wakes the others at once.

A process still starting — or about to be started in place of one that
ended — counts as holding none, for at most STARTING_S from its start (the
server keeps its slot fresh until the process reports): otherwise the first one ready
would take every connection queued while the others start, and the
counters' browsers would keep them there (20 of 20 after a restart or a
replacement). A connection opened meanwhile waits in the queue for the
process whose turn it is, about two seconds at a start; where connections
are short (a reverse proxy's), a process keeps taking them one at a time."""

from __future__ import annotations

import mmap
import os
import struct
import time

from waitress import wasyncore
from waitress.server import TcpWSGIServer

SLOT = struct.Struct("=qd")  # open connections, CLOCK_MONOTONIC when it last looked (0: no process)
STARTING = -1  # in a slot's connections: the process is starting, counted as holding none
LOOK_INTERVAL_S = 0.25  # a serving process's loop looks at least this often (its poll timeout)
STALE_S = 1.0
# A serving process slower than this to start no longer holds the others
# back. A start takes about 3 s on an idle box, but over 9 s on a busy one
# (two cores, three test workers and their browsers: the others then took
# every connection made meanwhile), as during a nightly load at 4M.
STARTING_S = 30.0


class ConnectionShares:
    """The shared slots and the wake eventfds, as the server holds them
    (create) or as one serving process does (attach)."""

    def __init__(self, memory_fd: int, wake_fds: list[int], slot: int | None = None):
        self.memory_fd, self.wake_fds, self.slot = memory_fd, wake_fds, slot
        self.memory = mmap.mmap(memory_fd, SLOT.size * len(wake_fds))
        self.taking = True  # what this process last decided

    @classmethod
    def create(cls, processes: int) -> ConnectionShares:
        memory_fd = os.memfd_create("sonae-connection-shares")
        os.ftruncate(memory_fd, SLOT.size * processes)  # zeroed: no process yet
        return cls(memory_fd, [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(processes)])

    def serving_process_arguments(self, slot: int) -> list[str]:
        return ["--shares-fd", str(self.memory_fd), "--wake-fds", ",".join(map(str, self.wake_fds)), "--slot", str(slot)]

    def fds(self) -> tuple[int, ...]:
        """The descriptors a serving process inherits."""
        return (self.memory_fd, *self.wake_fds)

    def starting(self, slot: int) -> None:
        """The server started a process in `slot`: it counts as holding
        none until it reports (keep_starting)."""
        SLOT.pack_into(self.memory, slot * SLOT.size, STARTING, time.monotonic())

    def keep_starting(self, slot: int) -> None:
        """Still starting: its slot kept fresh (the server calls this until
        STARTING_S after the start)."""
        connections, _ = SLOT.unpack_from(self.memory, slot * SLOT.size)
        if connections == STARTING:
            SLOT.pack_into(self.memory, slot * SLOT.size, STARTING, time.monotonic())

    def reported(self, slot: int) -> bool:
        """Whether the process in `slot` has reported, i.e. got ready."""
        connections, looked = SLOT.unpack_from(self.memory, slot * SLOT.size)
        return bool(looked) and connections != STARTING

    def clear(self, slot: int) -> None:
        """The process in `slot` ended: it no longer counts, and the others
        look again (the one that ended may have had the fewest)."""
        SLOT.pack_into(self.memory, slot * SLOT.size, 0, 0.0)
        self.wake_all_but(slot)

    def wake_all_but(self, slot: int | None) -> None:
        for other, fd in enumerate(self.wake_fds):
            if other != slot:
                os.eventfd_write(fd, 1)

    def counts(self) -> list[int | None]:
        """Each slot's open connections, None for a slot no live process
        has looked at within STALE_S."""
        now = time.monotonic()
        found = []
        for slot in range(len(self.wake_fds)):
            connections, looked = SLOT.unpack_from(self.memory, slot * SLOT.size)
            found.append(max(connections, 0) if looked and now - looked < STALE_S else None)
        return found

    def take_next(self, connections: int, accepting: bool) -> bool:
        """A serving process's turn of its loop: report its open
        connections, and whether it takes the next one — when waitress
        would (`accepting`) and no live process holds fewer. Stopping
        wakes the others."""
        SLOT.pack_into(self.memory, self.slot * SLOT.size, connections, time.monotonic())
        others = [count for slot, count in enumerate(self.counts()) if slot != self.slot and count is not None]
        taking = accepting and all(connections <= count for count in others)
        if self.taking and not taking:
            self.wake_all_but(self.slot)
        self.taking = taking
        return taking


class SharingServer(TcpWSGIServer):
    """waitress's server on the socket `sonae serve` bound, accepting in
    turn with the other serving processes (ConnectionShares)."""

    def __init__(self, application, sock, adj, shares: ConnectionShares):
        self.shares = shares
        # What create_server(sockets=[sock]) builds, as this class.
        super().__init__(application, {}, True, sock, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
        # Set here, not through Adjustments, which turns it into a whole number of seconds.
        self.adj.asyncore_loop_timeout = LOOK_INTERVAL_S
        Woken(shares.wake_fds[shares.slot], self._map)

    def readable(self):
        return self.shares.take_next(len(self.active_channels), super().readable())


class Woken(wasyncore.file_dispatcher):
    """This process's eventfd in its loop: another one stopped accepting
    or ended, so this one looks again at whether it takes the next."""

    def readable(self):
        return True

    def writable(self):
        return False

    def handle_read(self):
        try:
            self.recv(8)
        except BlockingIOError:
            pass  # another wake read it first
