"""A full load's parsing processes: each validates blocks of export lines
against the contract and turns them into rows (sync.loader cuts the
blocks, sends them and inserts what comes back).

Kept apart from sync.loader so that a worker process imports only this and
what it needs — the contract, the schema's row builders, the anomaly facts
— and not the loader's HTTP client, store and feed: each worker then
starts at about half the memory, which the load's peak counts twice.

The processes are Sonae's own (ParsingProcesses), not a ProcessPoolExecutor:
a pool's workers share one pipe for tasks and one for results, each held
open by every worker, so a worker killed halfway through a message (the
out-of-memory killer, an operator) can leave the pool waiting forever for
the rest of it — a nightly load that hangs instead of failing. Here each
process has a pipe of its own each way, and only it holds the far end: when
it dies, a write to it fails at once (EPIPE) and a read from it ends at
once (EOF), whatever it was doing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import orjson

from sync.anomalies import record_facts
from sync.contract import CONTRACT_VERSION, MAX_SEAL_IMAGE_BYTES, VALIDATORS, ContractError
from sync.errors import ExportInvalid, SyncError
from sync.schema import ROW_BUILDERS, blank_individual_number, record_digest, record_text, summary_key, summary_text

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The most one record's line may take, newline included: 64 KiB for a
# resident (a real one takes about 1 KiB); for a seal, its image at the
# contract's limit in base64 and 4 KiB for the rest. A file may decompress
# to its record count, plus one for blank lines, times this.
MAX_RECORD_BYTES = {"residents": 64 << 10, "seals": (MAX_SEAL_IMAGE_BYTES + 2) // 3 * 4 + (4 << 10)}


@dataclass(frozen=True)
class ParsedBlock:
    rows: list[tuple]  # search rows, each starting with its id: the line number
    rewritten: dict[int, bytes]  # line number → the record as Sonae stores it, where that differs from the line
    digest: int
    summaries: list[tuple]  # residents: (kana_key, birth_date, id, summary), sorted
    facts: list[tuple]  # one per record, for sync.anomalies
    findings: list[tuple]  # anomalies of single records (sync.anomalies)


def parse_block(kind: str, name: str, first_line: int, block: bytes, mirror_individual_number: bool,
                contract: int = CONTRACT_VERSION) -> ParsedBlock:
    """Validate a block of NDJSON lines (records of that contract version)
    and turn them into rows. A pure function of its arguments, so it can run
    in a worker process. A row's id is its line number in the file. The
    lines themselves are not sent back (the caller has the block): only
    those stored otherwise."""
    validate = VALIDATORS[kind]
    build_row = ROW_BUILDERS[kind]
    max_bytes = MAX_RECORD_BYTES[kind]
    rows, rewritten, summaries, facts, findings, digest = [], {}, [], [], [], 0
    for number, line in enumerate(block.split(b"\n"), start=first_line):
        if not line.strip():
            continue  # blank lines hold no record; the record count still has to match
        if len(line) >= max_bytes:
            raise ExportInvalid(f"{name} line {number:,}: {len(line):,} bytes, more than the {max_bytes:,} one {kind[:-1]} record may take")
        try:
            record = orjson.loads(line)
            validate(record, contract)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # ContractError is a ValueError
            problem = exc if isinstance(exc, ContractError) else f"not a valid record in UTF-8 JSON ({type(exc).__name__})"
            raise ExportInvalid(f"{name} line {number:,}: {problem}") from None
        if kind == "residents" and blank_individual_number(record, mirror_individual_number):
            line = rewritten[number] = record_text(record).encode("utf-8")
        digest += record_digest(line)
        row = build_row(number, record)
        rows.append(row)
        if kind == "residents":
            summaries.append((*summary_key(row), summary_text(record)))
        fact, found = record_facts(kind, record)
        facts.append(fact)
        findings += found
    summaries.sort()
    return ParsedBlock(rows, rewritten, digest, summaries, facts, findings)


class ParsingProcesses:
    """`count` worker processes that parse blocks. Blocks go to them in turn
    and each answers its own in order, so the result of block i is read
    from process i mod count: in file order, with nothing shared. A process
    waits for its next block until its last result has been read, which
    bounds what is in flight to about two blocks a process.

    `submit` and the results' `result` raise SyncError when a process has
    died; `stop` ends them all, whatever state they are in."""

    def __init__(self, count: int):
        self._workers: list[_Worker] = []
        self._submitted = 0
        try:
            for _ in range(count):
                self._workers.append(_Worker.start())
        except BaseException:
            self.stop()
            raise

    def submit(self, *task) -> PendingBlock:
        """Send parse_block's arguments to the next process in turn."""
        worker = self._workers[self._submitted % len(self._workers)]
        self._submitted += 1
        try:
            worker.tasks.send(task)
        except OSError:  # EPIPE: it has died
            raise worker.died() from None
        return PendingBlock(worker)

    def kill(self) -> None:
        """SIGKILL every process, whatever it is doing (a load being
        abandoned): a result being waited for then ends in EOF at once,
        even from a process that was stopped (SIGSTOP) or stuck."""
        for worker in self._workers:
            worker.process.kill()

    def stop(self) -> None:
        """Close every pipe: a process waiting for a block sees their end,
        one sending a result finds nobody reading, one parsing finds that
        after its block; each then exits. One that does not is killed."""
        for worker in self._workers:
            worker.tasks.close()
            worker.results.close()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


STOP_SECONDS = 10  # more than a block's parsing takes
# The process's whole program: this module, run under its own name (not as
# __main__, so what it sends unpickles in the loader as sync.parsing's).
WORKER_PROGRAM = "import sys; from sync.parsing import serve_blocks_from_argv; serve_blocks_from_argv(sys.argv[1:])"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where `sync` is imported from here, and so in the worker


@dataclass
class _Worker:
    process: subprocess.Popen
    tasks: Connection  # this end writes
    results: Connection  # this end reads

    @classmethod
    def start(cls) -> _Worker:
        task_reader, task_writer = os.pipe()
        result_reader, result_writer = os.pipe()
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")))))
        try:
            # A process group of its own: Ctrl-C at the terminal reaches the
            # loader's group, not the workers — the loader alone decides
            # how a load stops, and a worker still importing would print
            # its KeyboardInterrupt.
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER_PROGRAM, str(os.getpid()), str(task_reader), str(result_writer)],
                pass_fds=(task_reader, result_writer), stdin=subprocess.DEVNULL, env=environment, process_group=0,
            )
        except BaseException:
            for fd in (task_writer, result_reader):
                os.close(fd)
            raise
        finally:
            # Only the worker may hold its ends: that is what makes its death visible here.
            os.close(task_reader)
            os.close(result_writer)
        return cls(process, Connection(task_writer, readable=False), Connection(result_reader, writable=False))

    def died(self) -> SyncError:
        """A worker killed under the load (the kernel's out-of-memory killer,
        an operator): a failure the nightly job retries, told in words."""
        try:
            code = self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGKILL:  # what the kernel's out-of-memory killer sends
            return SyncError("a parsing process stopped unexpectedly (killed by SIGKILL); look for out-of-memory kills (dmesg) and rerun")
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 and -code in signal.valid_signals()
               else f"exit status {code}" if code is not None else "its pipe closed")
        return SyncError(f"a parsing process stopped unexpectedly ({how}); something on this machine stopped it — rerun")


class PendingBlock:
    """A block sent to a parsing process; `result()` waits for its rows."""

    def __init__(self, worker: _Worker):
        self._worker = worker

    def result(self) -> ParsedBlock:
        try:
            parsed, error = self._worker.results.recv()
        except (EOFError, OSError):  # the process died before or while sending it
            raise self._worker.died() from None
        if error is not None:
            raise error
        return parsed


def serve_blocks_from_argv(argv: list[str]) -> None:
    """A parsing process: parse each block received until the loader closes
    the pipe. Arguments: the loader's pid, the fd blocks arrive on, the fd
    results go back on. Each result is (ParsedBlock, None) or (None, the
    exception parse_block raised)."""
    parent_pid, task_fd, result_fd = (int(argument) for argument in argv)
    die_with_parent(parent_pid)
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):  # OSError: the loader stopped halfway through sending a block
            return  # the loader is done with us, or gone
        try:
            outcome = (parse_block(*task), None)
        except Exception as exc:
            outcome = (None, exc)
        try:
            results.send(outcome)
        except BrokenPipeError:
            return  # the loader stopped reading: the load is over
        except Exception:  # an exception that cannot be pickled: sent as words
            failure = outcome[1]
            results.send((None, SyncError(f"parsing failed: {type(failure).__name__}: {failure}")))


def die_with_parent(parent_pid: int) -> None:
    """Worker start-up: ask Linux to SIGKILL this process when its parent
    dies (PR_SET_PDEATHSIG), so a load killed outright leaves no workers
    behind, whatever they were doing."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
