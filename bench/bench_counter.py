"""Counter load: search latency at ward size and concurrent issuance.

    python bench/bench_counter.py --residents 1000000 --dir /var/tmp/sonae-bench

Builds (or reuses) an appliance in DIR exactly as `sonae demo run` does —
cloudsim with N residents, `sonae sync full`, `sonae serve` under waitress —
declares downtime, then measures through the HTTP API:

0. start-up: a new `sonae serve` on the existing snapshot, from the
   process's start to the first search answered (login included), with the
   snapshot evicted from the page cache (cold) and not (warm); baseline:
   the same interpreter starting `sonae --help`. --startup-rounds 0 skips it.
1. search: C concurrent connections (default 8; wrk as the load generator)
   issuing counter searches of each type in turn (kana prefix, kana + birth
   date, kanji name, address + kana, resident code) drawn from real rows,
   S seconds per type; p50/p95/p99. Baseline in the same run: GET
   /api/v1/status through the same stack (login, session, no search), and
   each p95 is printed as a ratio to it. --search-processes 1,0 runs it
   with one serving process, then with one per core (web.processes).
2. issuance: K counters (default 30), each repeating search → view →
   issue 住民票の写し → fetch the PDF with a think time between steps, for
   M minutes. p50/p95/p99 per endpoint, errors, duplicate serials, and audit
   completeness per action: every search, record view, issuance, refusal
   and PDF opened has exactly one audit entry. Baseline: a bare render of a
   certificate in this process (printing.render, no HTTP, no database) —
   the ratio is what serving, rules, serials and audit add around the PDF.
3. the knee (--knee 30,50,70,100): the issuance load again at each number
   of counters for --knee-minutes each; certificates per second and p95 per
   endpoint at each step, and the first step where adding counters stops
   adding throughput (or the request→PDF p95 doubles): the knee.
   With --compare-pool the knee runs twice in the same run, `sonae serve`
   restarted in between: first with certificates rendered in the server
   process (web.render_processes = 1), then in its render pool (one process
   per usable core); the saturated rate (the best certificates/s of a knee),
   its request→PDF p95 and the ratio of the two, and the CPU each
   certificate cost in the web process and in the render processes — the
   web process's share is what no number of cores speeds up.
   With --compare-processes the knee runs with one serving process, then
   with one per usable core (web.processes = 0), both with the render pool.

    python bench/bench_counter.py --residents 100000 --counters 30 --issue-minutes 10 --skip-search
    python bench/bench_counter.py --residents 100000 --skip-search --skip-issue --knee 30,50,70,100
    python bench/bench_counter.py --residents 100000 --skip-search --skip-issue --knee 10,20,40 --think 2 --knee-minutes 1 --compare-pool
    python bench/bench_counter.py --residents 100000 --skip-search --skip-issue --knee 20,40,60 --think 2 --knee-minutes 1 --compare-processes
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import page_cache  # noqa: E402  (bench/, beside this script)

from fallback.demo.commands import DemoSite  # noqa: E402

PASSWORD = "bench-password-1"
SUPERVISOR = "bench-kakaricho"  # registers the bench's counters as terminals, as a 係長 does at /terminal
# Each terminal's sonae_terminal cookie from that registration: signed with
# the site's session key, it holds across restarts of `sonae serve`, so a
# timed start-up round logs in without registering again.
_terminal_cookies: dict[str, str] = {}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return f"n={len(values):6d}  p50={percentile(values, 50) * 1000:7.1f} ms  p95={percentile(values, 95) * 1000:7.1f} ms  p99={percentile(values, 99) * 1000:7.1f} ms"


def terminal_cookie(base: str, terminal: str) -> str:
    """The cookie of a client registered as `terminal` (registered at
    /terminal by the bench's supervisor the first time it is asked for)."""
    if terminal not in _terminal_cookies:
        http = requests.Session()
        csrf = http.get(f"{base}/api/v1/session").json()["csrf_token"]
        response = http.post(f"{base}/terminal", allow_redirects=False,
                             data={"terminal": terminal, "username": SUPERVISOR, "password": PASSWORD, "csrf_token": csrf})
        if response.status_code != 302:
            raise SystemExit(f"registering {terminal} at /terminal failed: HTTP {response.status_code}")
        _terminal_cookies[terminal] = http.cookies["sonae_terminal"]
    return _terminal_cookies[terminal]


class Counter:
    """One logged-in counter terminal speaking the JSON API, from a client
    registered as that terminal."""

    def __init__(self, base: str, username: str, terminal: str):
        self.base = base
        self.http = requests.Session()
        self.http.cookies.set("sonae_terminal", terminal_cookie(base, terminal))
        csrf = self.http.get(f"{base}/api/v1/session").json()["csrf_token"]
        response = self.http.post(f"{base}/api/v1/session", json={"username": username, "password": PASSWORD},
                                  headers={"X-CSRF-Token": csrf})
        response.raise_for_status()
        self.csrf = response.json()["csrf_token"]

    def timed(self, method: str, path: str, **kwargs) -> tuple[float, requests.Response]:
        start = time.perf_counter()
        response = self.http.request(method, self.base + path, headers={"X-CSRF-Token": self.csrf}, timeout=60, **kwargs)
        return time.perf_counter() - start, response


def configure(site: DemoSite, upstream: dict, args, render_processes: int, processes: int = 1) -> None:
    counters = max([args.counters, *args.knee])
    terminals = [{"id": f"本庁{i}", "office": "本庁", "printer": f"プリンタ{i:03d}", "queue": ""} for i in range(1, counters + 1)]
    site.configure(upstream, extra={"counter": {"terminals": terminals, "daily_cap_per_requester": 0},
                                    "web": {"threads": args.threads, "render_processes": render_processes, "processes": processes}})


def start_serve(site: DemoSite, base: str) -> subprocess.Popen:
    """`sonae serve`, once every serving process is ready: the first to be
    ready takes every connection opened before the others are, and wrk's
    stay with it for the whole run."""
    log = site.root / "logs" / "bench-web.log"
    said_before = log.stat().st_size if log.exists() else 0
    web = site.start("serve", log="bench-web.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/api/v1/session", timeout=2)
            break
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting on a busy box
            time.sleep(0.2)
    while time.monotonic() < deadline:
        said = log.read_bytes()[said_before:].decode(errors="replace")
        processes = re.search(r"Sonae counter app on \S+ in (\d+) processes", said)
        if not processes or said.count(" ready\n") >= int(processes.group(1)):
            break
        time.sleep(0.2)
    return web


def stop_serve(web: subprocess.Popen) -> None:
    os.killpg(web.pid, signal.SIGTERM)
    web.wait(timeout=60)


def setup_site(args) -> tuple[DemoSite, dict, str]:
    site = DemoSite(Path(args.dir), residents=args.residents, seed=args.seed, web_port=args.port, upstream_port=args.port + 100)
    upstream = site.start_cloudsim()
    configure(site, upstream, args, 1 if args.compare_pool else 0, args.search_processes[0])
    if not serving_snapshot(site):
        started = time.perf_counter()
        print(site.run("sync", "full", "--actor", "bench").strip())
        print(f"full sync of {args.residents:,} residents: {time.perf_counter() - started:.1f} s")
    existing = site.run("user", "list")
    for i in range(1, max([args.counters, *args.knee]) + 1):
        if f"bench{i}\t" not in existing:
            site.run("user", "add", f"bench{i}", "--name", f"bench {i}", "--role", "clerk", "--password", PASSWORD)
    if f"{SUPERVISOR}\t" not in existing:
        site.run("user", "add", SUPERVISOR, "--name", "bench 係長", "--role", "supervisor", "--password", PASSWORD)
    state = site.run("mode", "show")
    if not state.startswith("downtime"):
        if not state.startswith("standby"):
            site.run("mode", "set", "standby", "--reason", "bench reset")
        site.run("mode", "set", "downtime", "--reason", "負荷試験")
    return site, upstream, f"http://127.0.0.1:{args.port}"


def serving_snapshot(site: DemoSite) -> bool:
    """Whether the site has a current generation this Sonae can serve (one
    built by an earlier version with another layout is loaded again)."""
    os.environ.update(site.env)
    from fallback.config import load_config
    from fallback.mirror.registry import snapshot_store
    from sync.errors import NoSnapshot, SnapshotOutdated

    try:
        snapshot_store(load_config()).open_register().close()
    except (NoSnapshot, SnapshotOutdated):
        return False
    return True


def sample_residents(site: DemoSite, count: int, seed: int) -> list[dict]:
    """Real rows from the snapshot to search for, read with the appliance's
    own key (the bench runs on the box)."""
    os.environ.update(site.env)
    from fallback.config import load_config
    from fallback.mirror.registry import snapshot_store

    store = snapshot_store(load_config())
    with store.open_register() as register:
        conn = register._conn
        total = register.meta.residents
        rng = random.Random(seed)
        rows = []
        while len(rows) < count:
            rowid = rng.randint(1, total)
            found = conn.execute("SELECT r.resident_code FROM residents r WHERE r.rowid = ? AND r.status = 'active'", (rowid,)).fetchone()
            if found:
                rows.append(register.resident(found[0]))
    return rows


def queries_for(resident: dict) -> dict[str, str]:
    surname_kana = resident["name_kana"].split("\u3000")[0]
    return {
        "kana_prefix": f"kana={resident['name_kana'][:len(surname_kana) + 2]}",
        "kana_birth": f"kana={surname_kana}&birth={resident['birth_date']}",
        "name": f"name={resident['name']}",
        "address_kana": f"address={resident['address']['town']}&kana={surname_kana}",
        "code": f"code={resident['resident_code']}",
    }


WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Cookie"] = "%s"})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%.3f %%.3f %%.3f\\n", summary.requests,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def run_wrk(base: str, cookie: str, paths: list[str], clients: int, seconds: float, workdir: Path) -> tuple[int, str, float, float, float]:
    """wrk (C, epoll) as the load generator: at 8 connections a Python
    client would spend more CPU than the server it measures. The errors
    come back as wrk counts them: "0", or each kind it saw."""
    script = workdir / "paths.lua"
    quoted = ",".join(json.dumps(p, ensure_ascii=False) for p in paths)
    script.write_text(WRK_SCRIPT % (quoted, cookie), encoding="utf-8")
    result = subprocess.run(["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:.0f}s", "-s", str(script), base],
                            capture_output=True, text=True, check=True)
    line = next(text for text in result.stdout.splitlines() if text.startswith("RESULT"))
    requests_done, *error_counts, p50, p95, p99 = line.split()[1:]
    # A timeout is an answer slower than wrk's 2 s; status: an answer other than 2xx/3xx.
    seen = {kind: int(count) for kind, count in zip(("status", "connect", "read", "write", "timeout"), error_counts, strict=True) if int(count)}
    errors = " + ".join(f"{count} {kind}" for kind, count in seen.items()) or "0"
    return int(requests_done), errors, float(p50), float(p95), float(p99)


def bench_search(base: str, residents: list[dict], clients: int, seconds: float, workdir: Path) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("the search benchmark needs wrk: apt-get install wrk")
    counter = Counter(base, "bench1", "本庁1")
    cookie = "; ".join(f"{c.name}={c.value}" for c in counter.http.cookies)
    by_kind: dict[str, list[str]] = {}
    for resident in residents:
        for kind, query in queries_for(resident).items():
            by_kind.setdefault(kind, []).append("/api/v1/residents?" + quote(query, safe="=&"))
    by_kind = {"baseline_status": ["/api/v1/status"], **by_kind}
    print(f"\n== search: {clients} concurrent connections (wrk), {seconds:.0f} s per query type ==")
    baseline_p95 = None
    for kind, paths in by_kind.items():
        done, errors, p50, p95, p99 = run_wrk(base, cookie, paths, clients, seconds, workdir)
        baseline_p95 = baseline_p95 or p95
        print(f"{kind:16} n={done:6d}  {done / seconds:6.0f} req/s  p50={p50:6.1f} ms  p95={p95:6.1f} ms  p99={p99:6.1f} ms"
              f"  p95/baseline={p95 / baseline_p95:5.2f}  errors={errors}")


def evict_snapshot_from_page_cache(site: DemoSite) -> int:
    """Drop the snapshot's files from the OS page cache, so the start-up
    reads them from disk as after a reboot. Returns the bytes evicted."""
    from fallback.config import load_config
    from fallback.mirror.registry import snapshot_store

    store = snapshot_store(load_config())
    return page_cache.evict(store.path_of(store.current()).parent)


def bench_startup(site: DemoSite, resident: dict, port: int, rounds: int) -> None:
    """From `sonae serve` starting (a new process on an existing snapshot)
    to the first search answered: the time a counter waits after the box
    is restarted. Each round: the snapshot evicted from the page cache
    (cold) or not (warm); the clock runs from Popen until the search's
    answer, through a login as soon as the server answers at all.
    Baseline in the same run: the same process start to `sonae --help`
    (interpreter and imports, no app)."""
    surname_kana = resident["name_kana"].split("\u3000")[0]
    query = f"/api/v1/residents?kana={quote(surname_kana)}&birth={resident['birth_date']}"
    base = f"http://127.0.0.1:{port}"
    interpreter = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(site.sonae("--help"), env=site.env, capture_output=True, check=True)
        interpreter.append(time.perf_counter() - started)
    print(f"\n== start-up: `sonae serve` on the existing snapshot to the first search answered, {rounds} rounds each ==")
    print(f"baseline: `sonae --help` (interpreter and CLI imports) p50 {statistics.median(interpreter):.2f} s")
    for cold in (True, False):
        totals, listening, answers = [], [], []
        for _ in range(rounds):
            if cold:
                evicted = evict_snapshot_from_page_cache(site)
            started = time.perf_counter()
            process = site.start("serve", "--port", str(port), log="bench-startup.log")
            try:
                while True:
                    try:
                        requests.get(base + "/api/v1/session", timeout=2)
                        break
                    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or not answering yet
                        if process.poll() is not None:
                            raise SystemExit(f"sonae serve exited; see {site.root / 'logs' / 'bench-startup.log'}") from None
                        time.sleep(0.02)
                listening.append(time.perf_counter() - started)
                counter = Counter(base, "bench1", "本庁1")
                elapsed, response = counter.timed("GET", query)
                response.raise_for_status()
                totals.append(time.perf_counter() - started)
                answers.append(elapsed)
            finally:
                site.kill(process)
        label = f"cold (snapshot evicted from the page cache, {evicted / 1e9:.1f} GB)" if cold else "warm"
        print(f"{label}: first search answered p50 {statistics.median(totals):.2f} s, max {max(totals):.2f} s "
              f"(×{statistics.median(totals) / statistics.median(interpreter):.1f} the baseline; listening after "
              f"{statistics.median(listening):.2f} s, the search itself {statistics.median(answers) * 1000:.0f} ms); "
              f"load average {os.getloadavg()[0]:.1f}")


def bare_render_seconds(site: DemoSite, resident: dict, rounds: int = 15) -> list[float]:
    from fallback.config import load_config
    from fallback.counter.rendering import municipality, print_settings
    from fallback.keys import signing_key
    from fallback.ops import now
    from printing.model import Certificate, IssueStamp
    from printing.render import render_certificate

    config = load_config()
    stamp = IssueStamp(serial=1, issued_at=now(), data_as_of=now(), municipality=municipality(config), terminal="本庁1", printer_id="プリンタ001")
    cert = Certificate(kind="juminhyo", residents=[resident], stamp=stamp, settings=print_settings(config))
    key = signing_key(config)
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        render_certificate(cert, key)
        timings.append(time.perf_counter() - start)
    return timings[3:]


# Each action a counter takes, by the audit action it must leave behind.
AUDITED = {"search": "search", "view": "view", "issue": "issue", "issue_refused": "issue.refused", "pdf": "certificate.open"}


@dataclass
class IssueRun:
    counters: int
    seconds: float
    timings: dict[str, list[float]]
    errors: list[str]
    issued: list[int]
    actions: collections.Counter  # successful actions by AUDITED key
    since: str  # the appliance's clock when the run started (audit entries after it are the run's)
    cpu_per_certificate: tuple[float, float] = (0.0, 0.0)  # seconds: web process, the rest of its session

    @property
    def per_second(self) -> float:
        return len(self.issued) / self.seconds


def run_issue(base: str, residents: list[dict], counters: int, minutes: float, think: float, web_pid: int | None = None) -> IssueRun:
    """K counters at work for M minutes; what they saw and did. With
    `web_pid`, the CPU each certificate cost in the web process and in the
    rest of its session (cpu_seconds), the counters' logins left out."""
    from fallback.ops import now_iso

    timings: dict[str, list[float]] = {}
    errors: list[str] = []
    issued: list[int] = []
    actions: collections.Counter = collections.Counter()
    lock = threading.Lock()
    # Logged in before the clock starts, as at a counter in the morning.
    logged_in: list[Counter | None] = [None] * counters

    def log_in(index: int) -> None:
        logged_in[index] = Counter(base, f"bench{index + 1}", f"本庁{index + 1}")

    logins = [threading.Thread(target=log_in, args=(i,)) for i in range(counters)]
    for t in logins:
        t.start()
    for t in logins:
        t.join()
    # waitress may still be answering requests a previous phase's wrk sent
    # before it hung up; their audit entries are not this run's
    time.sleep(3)
    since = now_iso()
    cpu_before = cpu_seconds(web_pid) if web_pid else None
    stop_at = time.monotonic() + minutes * 60

    def record(kind: str, elapsed: float, response: requests.Response, expected: int) -> bool:
        with lock:
            timings.setdefault(kind, []).append(elapsed)
            if response.status_code != expected:
                errors.append(f"{kind}: HTTP {response.status_code} {response.text[:120]}")
                return False
            actions[kind] += 1
        return True

    def counter_loop(index: int):
        counter = logged_in[index]
        rng = random.Random(1000 + index)
        time.sleep(rng.uniform(0, think))  # counters do not start in lockstep
        while time.monotonic() < stop_at:
            resident = rng.choice(residents)
            surname_kana = resident["name_kana"].split("\u3000")[0]
            elapsed, response = counter.timed("GET", f"/api/v1/residents?kana={surname_kana}&birth={resident['birth_date']}")
            record("search", elapsed, response, 200)
            time.sleep(rng.uniform(0.5, 1.5) * think / 3)
            elapsed, response = counter.timed("GET", f"/api/v1/residents/{resident['resident_code']}")
            record("view", elapsed, response, 200)
            time.sleep(rng.uniform(0.5, 1.5) * think / 3)
            # A resident drawn twice in a day (or again in a later step of
            # the knee) is issued again, the repeat confirmed as a clerk would.
            body = {"kind": "juminhyo", "requester_type": "self", "identity_document": "運転免許証", "copies": 1,
                    "acknowledge_move_out": True, "confirm_repeat": True}
            start = time.perf_counter()
            elapsed, response = counter.timed("POST", f"/api/v1/residents/{resident['resident_code']}/certificates", json=body)
            if response.status_code == 422:  # a rule refused it (e.g. support measure): a real outcome, not an error
                with lock:
                    timings.setdefault("issue_refused", []).append(elapsed)
                    actions["issue_refused"] += 1
                continue
            if record("issue", elapsed, response, 201):
                certificate = response.json()["certificates"][0]
                pdf_elapsed, pdf = counter.timed("GET", certificate["pdf"])
                if record("pdf", pdf_elapsed, pdf, 200):
                    with lock:
                        issued.append(certificate["serial"])
                        timings.setdefault("request_to_pdf", []).append(time.perf_counter() - start)
            time.sleep(rng.uniform(0.5, 1.5) * think / 3)

    threads = [threading.Thread(target=counter_loop, args=(i,)) for i in range(counters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = IssueRun(counters, minutes * 60, timings, errors, issued, actions, since)
    if cpu_before:
        cpu_after = cpu_seconds(web_pid)
        run.cpu_per_certificate = tuple((after - before) / max(1, len(issued)) for after, before in zip(cpu_after, cpu_before))
    return run


def bench_issue(site: DemoSite, base: str, residents: list[dict], counters: int, minutes: float, think: float) -> None:
    run = run_issue(base, residents, counters, minutes, think)
    bare = bare_render_seconds(site, residents[0])
    bare_p50 = statistics.median(bare)
    print(f"\n== issuance: {counters} counters, {minutes:g} min, think ≈{think:g} s per cycle ==")
    for kind, values in sorted(run.timings.items()):
        print(f"{kind:16} {summary(values)}")
    print(f"bare render (baseline) p50={bare_p50 * 1000:.1f} ms;  request→PDF p95 / bare p50 = {percentile(run.timings.get('request_to_pdf', []), 95) / bare_p50:.2f}")
    print(f"certificates issued: {len(run.issued)}  ({run.per_second:.2f}/s)   errors: {len(run.errors)}")
    for line in run.errors[:5]:
        print("  ", line)
    print(f"duplicate serials (client side): {len(run.issued) - len(set(run.issued))}")
    check_records(run)


def check_records(run: IssueRun) -> None:
    """Serials unique in the operational database, and one audit entry per
    action the counters took during the run — no more, no fewer."""
    from fallback.config import load_config
    from fallback.ops import open_ops

    conn = open_ops(load_config())
    try:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT scope || serial) FROM certificates").fetchone()
        audited = dict(conn.execute(
            "SELECT action, count(*) FROM audit WHERE at >= ? AND actor LIKE 'bench%' GROUP BY action", (run.since,)).fetchall())
    finally:
        conn.close()
    print(f"ops database: {rows} certificates, {distinct} distinct serials -> serials unique: {rows == distinct}")
    for kind, action in AUDITED.items():
        done, entries = run.actions[kind], audited.get(action, 0)
        print(f"  {kind:14} {done:7d} done, {entries:7d} '{action}' audit entries -> {'complete' if done == entries else 'MISMATCH'}")


def cpu_seconds(web_pid: int) -> tuple[float, float]:
    """CPU time (user + system) so far of the web process and of the other
    processes of its session (the render pool and its fork server)."""
    tick = os.sysconf("SC_CLK_TCK")
    web = others = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        session, used = int(fields[3]), (int(fields[11]) + int(fields[12])) / tick
        if entry.name == str(web_pid):
            web = used
        elif session == web_pid:
            others += used
    return web, others


def bench_knee(base: str, residents: list[dict], levels: list[int], minutes: float, think: float,
               web_pid: int | None = None) -> list[IssueRun]:
    """The issuance load at each number of counters. The knee is the first
    step where adding counters no longer adds at least half the throughput
    they would add if the box kept up, or where the request→PDF p95 has
    doubled since the first step. With `web_pid`, the CPU each certificate
    cost in the web process and in the rest of its session."""
    print(f"\n== the knee: {', '.join(map(str, levels))} counters, {minutes:g} min each, think ≈{think:g} s per cycle, "
          f"load average {os.getloadavg()[0]:.2f} ==")
    print(f"{'counters':>8} {'certs/s':>8} {'search p95':>11} {'view p95':>9} {'issue p95':>10} {'issue p99':>10} {'req→PDF p95':>12} {'errors':>7} {'refused':>7}"
          f"{' web CPU/cert  pool CPU/cert' if web_pid else ''}")
    runs: list[IssueRun] = []
    knee = None
    for level in levels:
        run = run_issue(base, residents, level, minutes, think, web_pid)
        runs.append(run)
        p95 = {kind: percentile(run.timings.get(kind, []), 95) * 1000 for kind in ("search", "view", "issue", "request_to_pdf")}
        cpu = f" {run.cpu_per_certificate[0] * 1000:9.1f}ms {run.cpu_per_certificate[1] * 1000:12.1f}ms" if web_pid else ""
        print(f"{level:8d} {run.per_second:8.2f} {p95['search']:9.1f}ms {p95['view']:7.1f}ms {p95['issue']:8.1f}ms "
              f"{percentile(run.timings.get('issue', []), 99) * 1000:8.1f}ms {p95['request_to_pdf']:10.1f}ms {len(run.errors):7d} {run.actions['issue_refused']:7d}{cpu}")
        if knee is None and len(runs) > 1:
            previous, first = runs[-2], runs[0]
            expected_gain = previous.per_second * (level / previous.counters - 1)
            slowed = percentile(run.timings.get("request_to_pdf", []), 95) > 2 * percentile(first.timings.get("request_to_pdf", []), 95)
            if run.per_second - previous.per_second < expected_gain / 2 or slowed:
                knee = (previous.counters, level)
    if knee:
        print(f"knee: between {knee[0]} and {knee[1]} counters")
    else:
        print(f"no knee up to {levels[-1]} counters: throughput still grows with the counters and latency holds")
    return runs


# The knees --compare-pool and --compare-processes run, in that order:
# (label, web.render_processes, web.processes); 0 is one per usable core.
KNEE_COMPARISONS = {
    "pool": (("one process", 1, 1), ("render pool", 0, 1)),
    "processes": (("one serving process", 0, 1), ("one per core", 0, 0)),
}


def compare_knees(site: DemoSite, upstream: dict, base: str, args, residents: list[dict], variants) -> None:
    """The same knee once per variant, `sonae serve` restarted in between.
    The CPU split is the web process's (the server's) against the rest of
    its session: with one serving process, what no number of cores speeds up."""
    saturated = {}
    for label, render_processes, processes in variants:
        configure(site, upstream, args, render_processes, processes)
        web = start_serve(site, base)
        print(f"\n### {label} (web.render_processes = {render_processes}, web.processes = {processes})")
        runs = bench_knee(base, residents, args.knee, args.knee_minutes, args.think, web_pid=web.pid)
        stop_serve(web)
        saturated[label] = max(runs, key=lambda run: run.per_second)
    print(f"\n== {' against '.join(saturated)} ({len(os.sched_getaffinity(0))} usable cores, "
          f"load average now {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} / {os.getloadavg()[2]:.2f}) ==")
    for (label, _, processes), run in zip(variants, saturated.values()):
        web_cpu, rest_cpu = run.cpu_per_certificate
        # With serving processes, the server only supervises: they are among "the others".
        web = "web process" if processes == 1 else "server (supervising)"
        print(f"{label:20} saturated at {run.per_second:6.2f} certificates/s ({run.counters} counters), "
              f"request→PDF p95 {percentile(run.timings.get('request_to_pdf', []), 95) * 1000:7.1f} ms; "
              f"CPU per certificate: {web} {web_cpu * 1000:.1f} ms, its other processes {rest_cpu * 1000:.1f} ms")
    first, last = saturated.values()
    print(f"ratio: ×{last.per_second / first.per_second:.2f} the {next(iter(saturated))} rate")
    # The serial part: the one serving process's own CPU, where a render pool does the rendering.
    for (label, render_processes, processes), run in zip(variants, saturated.values()):
        if processes == 1 and render_processes != 1:
            web_cpu, rest_cpu = run.cpu_per_certificate
            print(f"{label}: the web process's share of a certificate's CPU (serial fraction) "
                  f"{web_cpu / (web_cpu + rest_cpu):.2f}: at most {1 / web_cpu:.1f} certificates/s on any number of cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default="/var/tmp/sonae-bench")
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--threads", type=int, default=16, help="waitress threads")
    parser.add_argument("--search-processes", type=lambda text: [int(n) for n in text.split(",")], default=[1],
                        help="web.processes for the search, e.g. 1,0: the search once per value, `sonae serve` restarted "
                             "in between (0: one per usable core); what follows runs with the last")
    parser.add_argument("--search-clients", type=int, default=8)
    parser.add_argument("--search-seconds", type=float, default=30)
    parser.add_argument("--counters", type=int, default=30)
    parser.add_argument("--issue-minutes", type=float, default=2)
    parser.add_argument("--think", type=float, default=10, help="seconds per counter cycle spent thinking (split over 3 steps)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-issue", action="store_true")
    parser.add_argument("--startup-rounds", type=int, default=3, help="`sonae serve` start-ups timed, cold and warm (0: skip)")
    parser.add_argument("--knee", type=lambda text: [int(n) for n in text.split(",")], default=[],
                        help="numbers of counters to step through, e.g. 30,50,70,100")
    parser.add_argument("--knee-minutes", type=float, default=2)
    parser.add_argument("--compare-pool", action="store_true",
                        help="run the knee with certificates rendered in the server process, then in its render pool")
    parser.add_argument("--compare-processes", action="store_true",
                        help="run the knee with one serving process, then with one per usable core (web.processes = 0)")
    args = parser.parse_args()
    comparisons = [KNEE_COMPARISONS[name] for name in ("pool", "processes") if getattr(args, f"compare_{name}")]
    if comparisons and not args.knee:
        parser.error("--compare-pool and --compare-processes compare knees: give --knee")
    site, upstream, base = setup_site(args)
    web = start_serve(site, base)
    try:
        residents = sample_residents(site, 2000, args.seed)
        print(json.dumps({"residents": args.residents, "cores": os.cpu_count(), "waitress_threads": args.threads}))
        if args.startup_rounds:
            terminal_cookie(base, "本庁1")  # registered before the clock runs, as a counter PC is
            bench_startup(site, residents[0], args.port + 2, args.startup_rounds)
        if not args.skip_search:
            for step, processes in enumerate(args.search_processes):
                if step:
                    stop_serve(web)
                    configure(site, upstream, args, 1 if args.compare_pool else 0, processes)
                    web = start_serve(site, base)
                print(f"\n### web.processes = {processes} ({processes or len(os.sched_getaffinity(0))} serving process(es))")
                bench_search(base, residents, args.search_clients, args.search_seconds, Path(args.dir))
        if not args.skip_issue:
            bench_issue(site, base, residents, args.counters, args.issue_minutes, args.think)
        if comparisons:
            stop_serve(web)
            for variants in comparisons:
                compare_knees(site, upstream, base, args, residents, variants)
        elif args.knee:
            bench_knee(base, residents, args.knee, args.knee_minutes, args.think)
    finally:
        site.stop()


if __name__ == "__main__":
    main()
