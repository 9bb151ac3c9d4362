"""Where exports and changes come from: the upstream's HTTP API, or an
export directory dropped onto the appliance (e.g. from removable media).

Both offer the same methods. Anything that is not a usable answer — a
timeout, a refused connection, an HTTP error, a body that is not the JSON
the contract describes — raises UpstreamUnavailable with a one-line reason;
it is never returned as data.

A change-feed page and a resident look-up are verified here, before they
leave the client: signed by the upstream's key, contract 2, echoing what was
asked (the `after`, the resident code, the ward's municipality code), and
not dated more than five minutes ahead of this appliance's clock. One that
is not raises UpstreamUntrusted — the contract counts it as no answer. (A
manifest is verified by the loader, which also reads dropped directories.)
Whether an answer is older than the data already held is for the caller,
who knows what it holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.contract import ContractError, RuleBroken, check_not_ahead, parse_timestamp, verify_lookup, verify_page
from sync.errors import ExportInvalid, UpstreamUnavailable, UpstreamUntrusted

CHUNK_BYTES = 1 << 20  # reads from a local file
HTTP_CHUNK_BYTES = 64 << 10  # a dropped connection loses at most the chunk in flight
RESUME_ATTEMPTS = 3


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class UpstreamTrust:
    """What every signed answer is checked against: the upstream's public
    key, the ward it must be about, and this appliance's clock."""

    public_key: Ed25519PublicKey
    municipality_code: str
    clock: Callable[[], dt.datetime] = system_clock


@dataclass(frozen=True)
class Lookup:
    """A verified resident look-up: the person as the upstream holds them
    now (None: the upstream does not know the code) and their seals."""

    resident: dict | None
    seals: list[dict]
    as_of: dt.datetime


class HttpUpstream:
    def __init__(self, url: str, token: str, *, trust: UpstreamTrust, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.trust = trust
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self.last_date: dt.datetime | None = None  # the HTTP Date of the last answer: the upstream's clock, for the appliance's

    def describe(self) -> str:
        return self.url

    def close(self) -> None:
        self._session.close()

    def _get(self, path: str, *, params=None, headers=None, stream: bool = False) -> requests.Response:
        where = f"GET {self.url}{path}"
        try:
            response = self._session.get(self.url + path, params=params, headers=headers, stream=stream, timeout=self.timeout)
        except requests.Timeout:
            raise UpstreamUnavailable(f"{where}: no answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise UpstreamUnavailable(f"{where}: cannot connect ({_root_cause(exc)})") from None
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"{where}: {_root_cause(exc)}") from None
        self.last_date = _http_date(response.headers.get("Date"))
        if response.status_code >= 400:
            raise UpstreamUnavailable(f"{where}: HTTP {response.status_code}{_error_detail(response)}{_hint(response.status_code)}")
        return response

    def _json(self, path: str, params=None) -> dict:
        return self._body(self._get(path, params=params), path)

    def _body(self, response: requests.Response, path: str) -> dict:
        try:
            body = orjson.loads(response.content)  # a change-feed page holds up to 10,000 records
        except ValueError:
            raise UpstreamUnavailable(f"GET {self.url}{path}: the body is not JSON (HTTP {response.status_code})") from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"GET {self.url}{path}: the body is not a JSON object")
        return body

    def health(self) -> dict:
        body = self._json("/v1/health")
        if body.get("status") not in ("ok", "degraded", "down") or not isinstance(body.get("components"), dict):
            raise UpstreamUnavailable(f"GET {self.url}/v1/health: the body lacks status/components")
        return body

    def manifest(self) -> dict:
        return self._json("/v1/exports/latest")

    def iter_file(self, export_id: str, name: str, chunk_bytes: int = HTTP_CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of one export file as they arrive. A connection that
        drops mid-file is resumed from the byte reached (HTTP Range)."""
        path = f"/v1/exports/{requests.utils.quote(export_id, safe='')}/files/{requests.utils.quote(name, safe='')}"
        received, attempts = 0, 0
        while True:
            headers = {"Range": f"bytes={received}-"} if received else None
            response = self._get(path, headers=headers, stream=True)
            if received and response.status_code != 206:
                response.close()
                raise UpstreamUnavailable(f"GET {self.url}{path}: the connection dropped at byte {received:,} and the upstream cannot resume (HTTP {response.status_code})")
            try:
                with response:
                    for chunk in response.iter_content(chunk_bytes):
                        received += len(chunk)
                        yield chunk
                return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as exc:
                attempts += 1
                if attempts > RESUME_ATTEMPTS:
                    raise UpstreamUnavailable(f"GET {self.url}{path}: the connection dropped {attempts} times, last at byte {received:,} ({_root_cause(exc)})") from None

    def changes(self, after: int, limit: int) -> dict:
        """A verified page of changes after `after` (see the module's doc)."""
        where = f"GET {self.url}/v1/changes?after={after}"
        page = self._json("/v1/changes", params={"after": after, "limit": limit})
        with _verifying(where):
            verify_page(page, self.trust.public_key, after=after, municipality_code=self.trust.municipality_code)
            check_not_ahead(parse_timestamp(page["as_of"], "as_of"), self.trust.clock(), "the change-feed page")
        return page

    def lookup(self, resident_code: str) -> Lookup:
        """A verified look-up of one resident as the upstream holds them now."""
        path = f"/v1/residents/{requests.utils.quote(resident_code, safe='')}"
        body = self._json(path)
        with _verifying(f"GET {self.url}{path}"):
            verify_lookup(body, self.trust.public_key, resident_code=resident_code, municipality_code=self.trust.municipality_code)
            as_of = parse_timestamp(body["as_of"], "as_of")
            check_not_ahead(as_of, self.trust.clock(), "the resident look-up")
        return Lookup(body["resident"], body["seals"], as_of)


@contextlib.contextmanager
def _verifying(where: str) -> Iterator[None]:
    """Turns a contract refusal of an answer into "the upstream did not
    answer": UpstreamUntrusted for a broken rule, UpstreamUnavailable for a
    body of the wrong shape."""
    try:
        yield
    except RuleBroken as exc:
        raise UpstreamUntrusted(f"{where}: refused by the contract's {exc}; counted as no answer, nothing of it used") from None
    except ContractError as exc:
        raise UpstreamUnavailable(f"{where}: the body is not what the contract describes ({exc})") from None


class DirectoryUpstream:
    """An export dropped into a directory: manifest.json beside its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def describe(self) -> str:
        return f"directory {self.path.resolve()}"

    def close(self) -> None:
        pass

    def manifest(self) -> dict:
        manifest_path = self.path / "manifest.json"
        try:
            return json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExportInvalid(f"{self.path} has no manifest.json; an export directory holds manifest.json beside the files it lists") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExportInvalid(f"{manifest_path} is not valid JSON ({exc})") from None

    def iter_file(self, export_id: str, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        try:
            handle = open(self.path / name, "rb")
        except FileNotFoundError:
            raise ExportInvalid(f"{name} is listed in the manifest but missing from {self.path}") from None
        with handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def _no_api(self, what: str):
        return UpstreamUnavailable(f"{what}: an export directory ({self.path}) has no API; use the upstream URL for the change feed and lookups")

    def health(self) -> dict:
        raise self._no_api("health")

    def changes(self, after: int, limit: int) -> dict:
        raise self._no_api("change feed")

    def lookup(self, resident_code: str) -> Lookup:
        raise self._no_api("resident lookup")


def _http_date(value: str | None) -> dt.datetime | None:
    try:
        moment = email.utils.parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _root_cause(exc: BaseException) -> str:
    """The reason inside a requests/urllib3 error, short and on one line."""
    text = str(exc)
    for marker, reason in (("Connection refused", "connection refused"), ("Name or service not known", "host name not found"),
                           ("timed out", "timed out"), ("Connection reset", "connection reset"),
                           ("IncompleteRead", "connection closed mid-body")):
        if marker in text:
            return reason
    return " ".join(text.split())[:200] or type(exc).__name__


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
        return f" {body.get('error', '')}: {body.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError):
        return ""


def _hint(status: int) -> str:
    if status in (401, 403):
        return " — the upstream refused the token; check upstream.token_file"
    return ""
