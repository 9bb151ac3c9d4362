"""Hand certificates to a CUPS queue and follow the job to the end.

Uses the CUPS command-line clients (lp to submit, ipptool to read printer and
job state) so that no CUPS library binding is needed. `server` is the CUPS
server as `lp -h` takes it ("host:port" or a socket path); None means the
CUPS_SERVER environment variable, else localhost:631.

Errors carry a message for the counter clerk, who must know whether the
resident will get their paper: PrinterNotFoundError, PrinterStoppedError,
PrintJobFailedError, PrintTimeoutError and, for anything else, PrintError.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass

_TOOL_TIMEOUT_S = 20

_PRINTER_QUERY = """{
  OPERATION Get-Printer-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR keyword requested-attributes printer-state,printer-state-reasons,printer-state-message,printer-is-accepting-jobs
  STATUS successful-ok
  DISPLAY printer-state
  DISPLAY printer-state-reasons
  DISPLAY printer-state-message
  DISPLAY printer-is-accepting-jobs
}
"""

_JOB_QUERY = """{
  OPERATION Get-Job-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR integer job-id $job_id
  ATTR keyword requested-attributes job-state,job-state-reasons,job-printer-state-message
  STATUS successful-ok
  DISPLAY job-state
  DISPLAY job-state-reasons
  DISPLAY job-printer-state-message
}
"""

class PrintError(RuntimeError):
    """Printing did not happen, or its outcome is unknown."""


class PrinterNotFoundError(PrintError):
    pass


class PrinterStoppedError(PrintError):
    pass


class PrintJobFailedError(PrintError):
    pass


class PrintTimeoutError(PrintError):
    pass


@dataclass(frozen=True)
class PrinterStatus:
    queue: str
    state: str  # idle, processing, stopped
    accepting: bool
    reasons: tuple[str, ...]
    message: str

    @property
    def ready(self) -> bool:
        return self.state != "stopped" and self.accepting


@dataclass(frozen=True)
class JobStatus:
    job_id: str  # QUEUE-NUMBER, as lp prints it
    state: str  # pending, pending-held, processing, processing-stopped, canceled, aborted, completed
    reasons: tuple[str, ...]
    message: str


def _server(server: str | None) -> str:
    return server or os.environ.get("CUPS_SERVER") or "localhost:631"


def _printer_uri(queue: str, server: str | None) -> str:
    host = _server(server)
    if host.startswith("/"):
        # A domain socket travels in the host part of the URI, percent-encoded.
        host = urllib.parse.quote(host, safe="")
    return f"ipp://{host}/printers/{urllib.parse.quote(queue)}"


def _run(command: list[str], stdin: bytes | str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command,
            input=stdin.encode() if isinstance(stdin, str) else stdin,
            capture_output=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise PrintError(f"印刷用のコマンド {command[0]} がありません（cups-client / cups-ipp-utils を導入してください）") from None
    except subprocess.TimeoutExpired:
        raise PrintError("印刷サーバ(CUPS)が応答しません") from None


class _QueryFailed(Exception):
    pass


def _query(query: str, uri: str, variables: dict[str, str]) -> dict[str, str]:
    command = ["ipptool", "-c"]
    for name, value in variables.items():
        command += ["-d", f"{name}={value}"]
    # ipptool reads its test from a file; /dev/stdin spares a temporary one.
    result = _run(command + [uri, "/dev/stdin"], query)
    output = result.stdout.decode("utf-8", "replace")
    errors = result.stderr.decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(output)))
    if result.returncode != 0 or len(rows) < 2:
        raise _QueryFailed(errors.strip() or output.strip())
    return dict(zip(rows[0], rows[1]))


def _reasons(text: str) -> tuple[str, ...]:
    return tuple(reason for reason in text.split(",") if reason and reason != "none")


def printer_status(queue: str, *, server: str | None = None) -> PrinterStatus:
    try:
        values = _query(_PRINTER_QUERY, _printer_uri(queue, server), {})
    except _QueryFailed as failure:
        detail = str(failure)
        # The query asks for English status messages, so this text is stable.
        if "does not exist" in detail:
            raise PrinterNotFoundError(f"プリンタ「{queue}」が見つかりません（設定 printing.printer を確認してください）") from None
        raise PrintError(f"印刷サーバ(CUPS)に接続できません: {detail}") from None
    return PrinterStatus(
        queue=queue,
        state=values.get("printer-state", ""),
        accepting=values.get("printer-is-accepting-jobs") == "true",
        reasons=_reasons(values.get("printer-state-reasons", "")),
        message=values.get("printer-state-message", ""),
    )


def _stopped_message(queue: str, why: str, message: str, waiting_job: str | None = None) -> str:
    detail = f"（{message}）" if message else ""
    waiting = f"ジョブ {waiting_job} は印刷されずに待機しています。" if waiting_job else ""
    return f"プリンタ「{queue}」は{why}{detail}。{waiting}プリンタを確認して再開するか、別のプリンタで印刷してください"


def submit(pdf: bytes, queue: str, title: str, *, copies: int = 1, server: str | None = None) -> str:
    """Queue the PDF; returns the CUPS job id ("QUEUE-NUMBER").

    Refuses (PrinterStoppedError) when the queue is stopped or rejecting
    jobs: a job left waiting in a stopped queue would look printed to no one."""
    status = printer_status(queue, server=server)
    if status.state == "stopped":
        raise PrinterStoppedError(_stopped_message(queue, "停止しています", status.message))
    if not status.accepting:
        raise PrinterStoppedError(_stopped_message(queue, "印刷の受け付けを停止しています", status.message))
    command = ["lp", "-h", _server(server), "-d", queue, "-t", title, "-n", str(copies)]
    result = _run(command, pdf)
    output = result.stdout.decode("utf-8", "replace")
    match = re.search(r"request id is (\S+-\d+)", output)
    if result.returncode != 0 or match is None:
        detail = (result.stderr.decode("utf-8", "replace") or output).strip()
        raise PrintError(f"プリンタ「{queue}」に印刷を送れませんでした: {detail}")
    return match.group(1)


def _split_job_id(job_id: str) -> tuple[str, str]:
    queue, _, number = job_id.rpartition("-")
    if not queue or not number.isdigit():
        raise ValueError(f"{job_id!r} is not a CUPS job id (QUEUE-NUMBER)")
    return queue, number


def job_state(job_id: str, *, server: str | None = None) -> JobStatus:
    queue, number = _split_job_id(job_id)
    try:
        values = _query(_JOB_QUERY, _printer_uri(queue, server), {"job_id": number})
    except _QueryFailed as failure:
        raise PrintError(f"印刷ジョブ {job_id} の状態を読めません: {failure}") from None
    return JobStatus(
        job_id=job_id,
        state=values.get("job-state", ""),
        reasons=_reasons(values.get("job-state-reasons", "")),
        message=values.get("job-printer-state-message", ""),
    )


def wait_for_job(job_id: str, timeout: float, *, server: str | None = None, poll_interval: float = 0.25) -> JobStatus:
    """Wait until the job is completed and return its status.

    Raises PrintJobFailedError (canceled or aborted), PrinterStoppedError (the
    job waits on a stopped printer: say so now rather than at the timeout) or
    PrintTimeoutError (still not done after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_state(job_id, server=server)
        if status.state == "completed":
            return status
        if status.state in ("canceled", "aborted"):
            word = "取り消されました" if status.state == "canceled" else "失敗しました"
            detail = f"（{status.message}）" if status.message else ""
            raise PrintJobFailedError(f"印刷ジョブ {job_id} は{word}{detail}。証明書は印刷されていません")
        if status.state in ("pending", "processing-stopped"):
            queue, _ = _split_job_id(job_id)
            printer = printer_status(queue, server=server)
            if printer.state == "stopped":
                raise PrinterStoppedError(_stopped_message(queue, "停止しています", printer.message, waiting_job=job_id))
        if time.monotonic() >= deadline:
            raise PrintTimeoutError(
                f"印刷ジョブ {job_id} が{timeout:g}秒たっても終わりません（状態: {status.state}）。プリンタを確認してください"
            )
        time.sleep(poll_interval)
