"""Why a sync did not happen. Every message names what was wrong and what to
do, because it ends up on an operator's terminal and in `sync_runs`."""

from __future__ import annotations


class SyncError(Exception):
    """Base of every expected sync failure (the CLI prints its message)."""


class UpstreamUnavailable(SyncError):
    """The upstream did not answer usably: timeout, refused connection, HTTP
    error or malformed body. Never treated as data; worth retrying."""


class UpstreamUntrusted(UpstreamUnavailable):
    """An answer that breaks a rule of the contract (unsigned or wrongly
    signed, not an answer to the question asked, dated in the future or
    before the data held): the contract says it counts as no answer, and it
    is never used as data. Recorded as a refusal, since it may be an attack."""


ASK_THE_VENDOR = "ask the upstream vendor for a corrected export"


class ExportInvalid(SyncError):
    """The export fails an integrity check (signature, checksum, byte or
    record count, gzip, record validation, duplicate keys) or a rule of the
    contract (its time, its order). Never overridable: the previous
    generation keeps serving."""

    def __init__(self, reason: str, advice: str = ASK_THE_VENDOR):
        self.reason = reason
        self.advice = advice
        super().__init__(f"{reason}; export refused, the current generation keeps serving — {advice}")

    def __reduce__(self):  # rebuilt from the reason when it crosses from a parsing process
        return type(self), (self.reason, self.advice)


class GateRefused(SyncError):
    """A plausibility gate refused an export that is intact but looks wrong.
    The operator may override it with `override_flag` if it is expected."""

    def __init__(self, gate: str, figures: str, override_flag: str):
        self.gate = gate
        self.figures = figures
        self.override_flag = override_flag
        super().__init__(f"{gate} gate refused the export: {figures}; if this is expected, rerun with {override_flag}")

    def __reduce__(self):
        return type(self), (self.gate, self.figures, self.override_flag)


class FeedBroken(SyncError):
    """The change feed cannot be trusted (gap, repeated seq, malformed or
    inconsistent change). Nothing of the broken page was applied; a full
    export is needed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; nothing of this page was applied and a full export is due (the worker runs it; `sonae sync full` runs it now)")

    def __reduce__(self):
        return type(self), (self.reason,)


class SyncBusy(SyncError):
    """Another process holds the snapshot directory's write lock."""


class NoSnapshot(SyncError):
    """No generation has been loaded yet, or the one asked for does not exist."""


class SnapshotDiskFull(SyncError):
    """The snapshot directory ran out of space during a write."""


class StoreDamaged(SyncError):
    """The snapshot directory is not in a state this appliance wrote
    (a CURRENT pointer to a missing generation, an unreadable pointer)."""


class SnapshotOutdated(StoreDamaged):
    """A generation built by an earlier Sonae with another snapshot layout;
    a full load builds a current one."""
