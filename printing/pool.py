"""Certificates rendered in a pool of processes, so that rendering uses
every core.

segno and WeasyPrint are Python under one interpreter lock: a server that
renders in its request threads renders on one core however many the box
has. Each process of the pool renders whole certificates — the signed QR
codes, the HTML, WeasyPrint — from the plain certificate data, and returns
the PDF and what it vouches for. Nothing in a pool process allocates a
serial or writes a database: the caller stays the single writer.

The processes come from a fork server ('forkserver'), never from a fork of
the threaded web server (which could copy a lock another thread holds), and
each is warmed by a tiny render (fontconfig's font list, Pango, WeasyPrint's
stylesheet machinery) before its first certificate. A process that dies
(killed, out of memory) breaks the whole executor and every render waiting
on it: each of those renders gets a fresh executor and one more try there;
RenderProcessLost when that breaks too.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.model import Certificate
from printing.render import STYLESHEET, RenderedCertificate, html_to_pdf, qr_code, render_certificate

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
TRIES = 2  # the first executor, then one fresh executor

_WARM_UP_PAGE = (
    '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
    f"<style>{STYLESHEET}</style></head><body><h1>住民票の写し</h1><p>発行番号　000000</p></body></html>"
)


class RenderProcessLost(RuntimeError):
    """The process rendering a certificate died, and so did the one that
    tried again: nothing was rendered."""


def _start_process(server: int) -> None:
    """A pool process's start: bound to the server's life, deaf to Ctrl-C,
    warmed up."""
    # The processes hold their task queue open themselves, so they would
    # wait forever after a killed server. Linux kills them with the fork
    # server (PR_SET_PDEATHSIG), but the fork server outlives a killed
    # server while they live — each holds the pipe whose end tells it the
    # server is gone — so each also watches the server itself.
    fork_server = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != fork_server:  # it ended before prctl took effect
        os._exit(1)
    _end_with(server)
    # Ctrl-C at a terminal reaches the whole process group: the server
    # alone decides when the pool stops (RenderPool.close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    qr_code("warm-up")
    html_to_pdf(_WARM_UP_PAGE)


def _end_with(server: int) -> None:
    """End this process as soon as process `server` has ended."""
    try:
        ended = os.pidfd_open(server)
    except ProcessLookupError:
        os._exit(1)

    def watch() -> None:
        select.select([ended], [], [])  # readable once the process has ended
        os._exit(1)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def _render(cert: Certificate, signing_key: bytes) -> RenderedCertificate:
    return render_certificate(cert, Ed25519PrivateKey.from_private_bytes(signing_key))


QUIET_RESOURCE_TRACKER = "ignore:resource_tracker:UserWarning"


class RenderPool:
    """`processes` warm processes rendering certificates; render() may be
    called from any number of threads."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"a render pool needs at least one process, not {processes}")
        self.processes = processes
        # A pool whose owner is killed outright leaves its semaphores to
        # multiprocessing's resource tracker, which frees them and says so
        # in a raw UserWarning on the service's log; the owner's own server
        # has already logged the death in words. The tracker takes its
        # warning filters from sys.warnoptions when it starts.
        if QUIET_RESOURCE_TRACKER not in sys.warnoptions:
            sys.warnoptions.append(QUIET_RESOURCE_TRACKER)
        self._context = multiprocessing.get_context("forkserver")
        # The fork server imports WeasyPrint once; each process forked from
        # it starts with it loaded (and imports the program's main module
        # again, as every multiprocessing child does).
        self._context.set_forkserver_preload(["printing.pool"])
        self._lock = threading.Lock()
        self._executor = self._new_executor()
        self._closing = False
        self.restarts = 0  # executors started after one broke

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=self._context, initializer=_start_process, initargs=(os.getpid(),))

    def warm(self) -> None:
        """Start every process (each warms up before its first task) and
        wait until they answer, so the first certificates do not pay for
        starting them."""
        # While no process is idle, each submit starts one more.
        answers = [self._executor.submit(qr_code, "warm-up") for _ in range(self.processes)]
        for answer in answers:
            answer.result()

    def start_warming(self) -> None:
        """warm(), on a thread of its own: starting a process waits for the
        fork server to import WeasyPrint, and the server should be
        answering searches meanwhile. A certificate asked for before then
        waits for its process, as it would have before the server listened."""
        threading.Thread(target=self._warm_quietly, name="render-pool-warm-up", daemon=True).start()

    def _warm_quietly(self) -> None:
        try:
            self.warm()
        # Closed, a process died, or the server is stopping while a process
        # starts (the fork server already gone): warming is only a head
        # start, and render() starts what it needs afresh.
        except (BrokenProcessPool, RuntimeError, EOFError, ConnectionError, FileNotFoundError) as e:
            log.info("render pool warm-up stopped: %r", e)
        except Exception:  # a fault render() would meet too: said now, not first at a counter
            log.warning("render pool warm-up failed", exc_info=True)

    def render(self, cert: Certificate, signing_key: Ed25519PrivateKey) -> RenderedCertificate:
        """printing.render.render_certificate, in a pool process."""
        # The key goes to the process with each certificate (a pipe to a
        # child of this process, same user): a rotated key applies at once.
        key = signing_key.private_bytes_raw()
        for _ in range(TRIES):
            executor = self._executor
            try:
                return executor.submit(_render, cert, key).result()
            # Cancelled: it waited in an executor another render found
            # broken and replaced — marked broken a moment before its
            # waiting renders are failed, so some are cancelled instead.
            except (BrokenProcessPool, CancelledError):
                if self._closing:
                    raise RenderProcessLost("the render pool was closing: the server is stopping") from None
                self._replace(executor)
        raise RenderProcessLost(f"the process rendering the certificate died {TRIES} times")

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A fresh executor for a broken one, once however many renders
        saw it break."""
        with self._lock:
            if self._executor is broken:
                self._executor = self._new_executor()
                self.restarts += 1
                log.warning("a certificate render process died; rendering goes on in %d fresh processes", self.processes)
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop taking certificates, let the ones rendering finish, and end
        the processes."""
        self._closing = True
        self._executor.shutdown(wait=True, cancel_futures=True)
