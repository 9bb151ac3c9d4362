"""Where exports and changes come from: the upstream's HTTP API, or an
export directory dropped onto the appliance (e.g. from removable media).

Both offer the same methods. Anything that is not a usable answer — a
timeout, a refused connection, an HTTP error, a body that is not the JSON
the contract describes — raises UpstreamUnavailable with a one-line reason;
it is never returned as data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import requests

from sync.errors import ExportInvalid, UpstreamUnavailable

CHUNK_BYTES = 1 << 20  # reads from a local file
HTTP_CHUNK_BYTES = 64 << 10  # a dropped connection loses at most the chunk in flight
RESUME_ATTEMPTS = 3


class HttpUpstream:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def describe(self) -> str:
        return self.url

    def close(self) -> None:
        self._session.close()

    def _get(self, path: str, *, params=None, headers=None, stream: bool = False, missing_ok: bool = False) -> requests.Response:
        where = f"GET {self.url}{path}"
        try:
            response = self._session.get(self.url + path, params=params, headers=headers, stream=stream, timeout=self.timeout)
        except requests.Timeout:
            raise UpstreamUnavailable(f"{where}: no answer within {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise UpstreamUnavailable(f"{where}: cannot connect ({_root_cause(exc)})") from None
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"{where}: {_root_cause(exc)}") from None
        if response.status_code >= 400 and not (missing_ok and response.status_code == 404):
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
        body = self._json("/v1/changes", params={"after": after, "limit": limit})
        if not isinstance(body.get("changes"), list) or not isinstance(body.get("last_seq"), int) or not isinstance(body.get("as_of"), str):
            raise UpstreamUnavailable(f"GET {self.url}/v1/changes: the body lacks changes/last_seq/as_of")
        return body

    def resident(self, resident_code: str) -> dict | None:
        """One resident as upstream holds them now; None if upstream does not know the code."""
        path = f"/v1/residents/{requests.utils.quote(resident_code, safe='')}"
        response = self._get(path, missing_ok=True)
        return None if response.status_code == 404 else self._body(response, path)


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

    def resident(self, resident_code: str) -> dict | None:
        raise self._no_api("resident lookup")


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
