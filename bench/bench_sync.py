"""sync: full load, change feed and verification at ward size, from cloudsim
over loopback HTTP.

    .venv/bin/python bench/bench_sync.py [--sizes 100000 1000000] [--changes 10000] [--repeat 3]
                                         [--state-dir bench/results/cloudsim] [--skip-plain]
                                         [--work-dir DIR [--only-changes]] [--page-cache warm cold as-found]

For each size, `sonae cloudsim serve` runs in its own process (its register
is generated once and reused from --state-dir) and the appliance side runs as
a real `sonae sync full` process with its own SONAE_HOME. Printed per size:

- floor: downloading, hashing and gunzipping the same files (in this
  process) and parsing every record with orjson (a process per core),
  without validating or storing anything — the baseline;
- load: `sonae sync full` wall and CPU seconds (its parsing workers included),
  peak RSS of the process tree (sampled from /proc every 0.1 s) and of the
  main process alone, and the ratio load / floor;
- plain: the same build (`sync.loader.build_register`) into plain SQLite and
  into SQLCipher, in child processes: the cost of encryption as a ratio;
- verify: `SnapshotStore.verify` of the new generation;
- search: p50 / p95 of Register.search for typical counter queries;
- certificate font: the worker's step after a load (fallback.mirror.syncing.
  prepare_certificate_font: every resident's printed text scanned for rare
  glyphs, the IPAmj subset built), in a child process: wall, CPU, peak RSS;
and, on the largest size, applying N changes from the feed (with a reader
open, as the counter app keeps them: the run then leaves its WAL to the next
run, which is timed too) with the snapshot in the OS page cache and evicted
from it (--page-cache: the runs take turns), plus a linear extrapolation of load time and
memory to 4,000,000 residents. --only-changes measures the change feed
alone, on the generations an earlier run left in --work-dir.

Results are also written to bench/results/sync-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import page_cache  # noqa: E402  (bench/, beside this script)

from fallback.config import load_config  # noqa: E402
from fallback.mirror.registry import snapshot_store  # noqa: E402
from fallback.mirror.syncing import upstream_from_config  # noqa: E402
from fallback.ops import open_ops  # noqa: E402
from sync.changes import apply_changes  # noqa: E402
from sync.contract import public_key_from_b64  # noqa: E402
from sync.register import connect_snapshot  # noqa: E402
from sync.upstream import HttpUpstream, UpstreamTrust  # noqa: E402

SONAE = str(Path(sys.executable).with_name("sonae"))
REGISTER_DATE = "2026-11-24"


# --- cloudsim in its own process -------------------------------------------------


class CloudSimProcess:
    def __init__(self, residents: int, state_root: Path, seed: int = 1):
        self.state_dir = state_root / f"{residents}-seed{seed}"
        self.ready = Path(tempfile.mkdtemp(prefix="bench-sync-")) / "ready.json"
        self.process = subprocess.Popen(
            [SONAE, "cloudsim", "serve", "--residents", str(residents), "--seed", str(seed), "--as-of", REGISTER_DATE,
             "--state-dir", str(self.state_dir), "--port", "0", "--admin-port", "0", "--change-rate", "0",
             "--ready-file", str(self.ready)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 3600  # a first 1 M register takes minutes to generate
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise SystemExit(f"cloudsim did not start: {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("cloudsim did not become ready within an hour")
            time.sleep(0.5)
        self.info = json.loads(self.ready.read_text())

    def make_changes(self, at_least: int, after_seq: int) -> int:
        """Let things happen in the ward until the feed holds `at_least` changes after `after_seq`."""
        last_seq = after_seq
        while last_seq - after_seq < at_least:
            events = max(100, (at_least - (last_seq - after_seq)) // 2)
            answer = subprocess.run([SONAE, "cloudsim", "changes", "--events", str(min(events, 100_000)),
                                     "--admin-url", self.info["admin_url"], "--token", self.info["token"]],
                                    capture_output=True, text=True, check=True).stdout
            last_seq = int(answer.split("last_seq=")[1])
        return last_seq

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        shutil.rmtree(self.ready.parent, ignore_errors=True)


# --- the appliance side -----------------------------------------------------------


def appliance_env(home: Path, sim: CloudSimProcess) -> dict:
    etc = home.parent / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    key = etc / "master.key"
    if not key.exists():
        subprocess.run([SONAE, "key", "init", str(key)], check=True, capture_output=True)
    return {
        **os.environ,
        "SONAE_HOME": str(home),
        "SONAE_CONFIG": str(etc / "sonae.toml"),
        "SONAE_SECURITY_KEY_FILE": str(key),
        "SONAE_UPSTREAM_URL": sim.info["url"],
        "SONAE_UPSTREAM_TOKEN": sim.info["token"],
        "SONAE_UPSTREAM_PUBLIC_KEY": sim.info["public_key"],
        "SONAE_UPSTREAM_TIMEOUT_S": "120",
        "SONAE_UPSTREAM_ALLOW_INSECURE_HTTP": "true",  # cloudsim on loopback
    }


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, changed = {pid}, True
    while changed:
        grown = {child for child, parent in parents.items() if parent in tree}
        changed = not grown <= tree
        tree |= grown
    total = 0
    for member in tree:
        try:
            with open(f"/proc/{member}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def run_measured(args: list[str], env: dict) -> dict:
    """Run a command; wall and CPU seconds (children included), peak RSS of
    its process tree (sampled) and of its main process (kernel's maximum)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.wait(0.1):
            peak = max(peak, tree_rss_bytes(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    stop.set()
    sampler.join()
    wall = time.perf_counter() - started
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args[1:])} failed: {err.strip()}")
    return {"seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_tree_rss_mb": round(peak / 1e6), "main_maxrss_mb": round(usage.ru_maxrss / 1024), "stdout": out.strip()}


def parse_block(block: bytes) -> int:
    """The floor's work on a block of lines: parse each with orjson."""
    records = 0
    for line in block.split(b"\n"):
        if line:
            orjson.loads(line)
            records += 1
    return records


FLOOR_BLOCK_BYTES = 2 << 20  # as the loader's blocks


def floor(sim: CloudSimProcess) -> dict:
    """Download, hash and gunzip every file (this process) and parse every
    record with orjson (a process per core, blocks of whole lines as the
    loader cuts them); store nothing: the least any loader has to do, on
    all the cores it has."""
    upstream = HttpUpstream(sim.info["url"], sim.info["token"], trust=UpstreamTrust(public_key_from_b64(sim.info["public_key"]), "131113"),
                            timeout=120)
    workers = os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    pool.submit(int).result()  # the workers are up before the clock starts
    cpu, children_cpu, started = time.process_time(), _children_cpu(), time.perf_counter()
    manifest = upstream.manifest()
    records, pending_blocks = 0, collections.deque()
    for entry in manifest["files"]:
        decompressor, pending = zlib.decompressobj(wbits=31), b""
        digest = hashlib.sha256()
        for chunk in upstream.iter_file(manifest["export_id"], entry["name"]):
            digest.update(chunk)
            data = chunk
            while data:
                if decompressor.eof:
                    decompressor = zlib.decompressobj(wbits=31)
                pending += decompressor.decompress(data)
                data = decompressor.unused_data
            if len(pending) >= FLOOR_BLOCK_BYTES:
                cut = pending.rfind(b"\n") + 1
                pending_blocks.append(pool.submit(parse_block, pending[:cut]))
                pending = pending[cut:]
                while len(pending_blocks) > 2 * workers:  # memory stays flat
                    records += pending_blocks.popleft().result()
        pending_blocks.append(pool.submit(parse_block, pending))
    records += sum(future.result() for future in pending_blocks)
    seconds = time.perf_counter() - started
    pool.shutdown()
    upstream.close()
    return {"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu + _children_cpu() - children_cpu, 2),
            "records": records, "workers": workers}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


BUILD_CHILD = """
import json, os, sys, time
from sync import crypto
from sync.register import connect_snapshot
from sync.contract import public_key_from_b64
from sync.loader import build_register, prepare_bulk_build
from sync.upstream import HttpUpstream, UpstreamTrust
if __name__ == "__main__":
    url, token, public_key, path, mode = sys.argv[1:6]
    scratch_path = path + ".scratch"
    if mode == "plain":
        import sqlite3
        conn = sqlite3.connect(path, check_same_thread=False)
        scratch = sqlite3.connect(scratch_path, check_same_thread=False)
    else:
        key = os.urandom(32)
        conn = connect_snapshot(path, key, check_same_thread=False)
        scratch = crypto.connect(scratch_path, key, check_same_thread=False)
    prepare_bulk_build(conn)
    prepare_bulk_build(scratch)
    upstream = HttpUpstream(url, token, trust=UpstreamTrust(public_key_from_b64(public_key), "131113"), timeout=120)
    started = time.perf_counter()
    figures = build_register(conn, upstream, upstream.manifest(), mirror_individual_number=False, scratch=scratch)
    conn.close()
    scratch.close()
    os.unlink(scratch_path)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 2), "residents": figures.residents}))
"""


def load_phases(env: dict) -> dict:
    """Where the last full load's time went, as it recorded it (sync.loader.Phases)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("SONAE_")})
    ops = open_ops(load_config())
    try:
        (detail,) = ops.execute("SELECT detail FROM sync_runs WHERE kind = 'full' AND outcome = 'ok' ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        ops.close()
    return json.loads(detail)["phases"]


FONT_CHILD = """
import json
from fallback.config import load_config
from fallback.mirror.syncing import prepare_certificate_font
print(json.dumps(prepare_certificate_font(load_config())))
"""


def certificate_font(env: dict) -> dict:
    measured = run_measured([sys.executable, "-c", FONT_CHILD], env)
    figures = json.loads(measured["stdout"]) or {}
    return {"seconds": measured["seconds"], "cpu_seconds": measured["cpu_seconds"], "peak_tree_rss_mb": measured["peak_tree_rss_mb"],
            "rare_glyphs": figures.get("rare_glyphs"), "missing": len(figures.get("missing", [])), "error": figures.get("error")}


def encryption_cost(sim: CloudSimProcess, work: Path) -> dict:
    script = work / "build_child.py"
    script.write_text(BUILD_CHILD)
    results = {}
    for mode in ("plain", "sqlcipher"):
        path = work / f"{mode}.db"
        measured = run_measured([sys.executable, str(script), sim.info["url"], sim.info["token"], sim.info["public_key"], str(path), mode],
                                dict(os.environ))
        results[mode] = {**json.loads(measured["stdout"]), "cpu_seconds": measured["cpu_seconds"], "file_mb": round(path.stat().st_size / 1e6)}
        path.unlink()
    results["ratio"] = round(results["sqlcipher"]["seconds"] / results["plain"]["seconds"], 2)
    return results


# Typical counter searches, built from residents sampled across the register.
SEARCH_KINDS = {
    "kana (full)": lambda kana, name, birth, address: {"kana": kana},
    "kana (1 char)": lambda kana, name, birth, address: {"kana": kana[:1]},
    "kana (3) + birth date": lambda kana, name, birth, address: {"kana": kana[:3], "birth_date": birth},
    "name (2 chars)": lambda kana, name, birth, address: {"name": name[:2]},
    "name (2) + birth date": lambda kana, name, birth, address: {"name": name[:2], "birth_date": birth},
    "birth date": lambda kana, name, birth, address: {"birth_date": birth},
    "address (6 chars)": lambda kana, name, birth, address: {"address": address[:6]},
    "kana (2) + address (4)": lambda kana, name, birth, address: {"kana": kana[:2], "address": address[:4]},
}


def search_latency(env: dict, samples: int = 300) -> dict:
    os.environ.update({k: v for k, v in env.items() if k.startswith("SONAE_")})
    store = snapshot_store(load_config())
    conn = connect_snapshot(store.path_of(store.current()), store.key, readonly=True)
    rows = conn.execute("SELECT kana_key, name_key, birth_date, address_key FROM residents WHERE id % 997 = 0 LIMIT ?", (samples,)).fetchall()
    conn.close()
    per_kind, everything = {}, []
    with store.open_register() as register:
        for kind, make in SEARCH_KINDS.items():
            timings = []
            for row in rows:
                started = time.perf_counter()
                register.search(**make(*row), limit=51)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            per_kind[kind] = {"p50_ms": round(statistics.median(timings), 2), "p95_ms": round(timings[int(len(timings) * 0.95)], 2)}
            everything += timings
    everything.sort()
    return {"queries": len(everything), "p50_ms": round(statistics.median(everything), 2),
            "p95_ms": round(everything[int(len(everything) * 0.95)], 2), "max_ms": round(everything[-1], 2), "by_kind": per_kind}


PAGE_CACHE_STATES = {
    "warm": ("snapshot in the page cache (read through before each run, as on an appliance with the memory to hold it)",
             page_cache.read_through),
    "cold": ("snapshot evicted from the page cache before each run (every page read from disk, as after a reboot or on a register "
             "larger than the memory)", page_cache.evict),
    "as-found": ("page cache as the runs before left it", None),
}


def changes_benchmark(sim: CloudSimProcess, env: dict, count: int, repeat: int, batch: int | None, states: list[str]) -> dict:
    """`repeat` rounds of one timed run per page-cache state, the states
    taking turns so that the machine's moods spread over all of them."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("SONAE_")})
    config = load_config()
    store = snapshot_store(config)
    upstream = upstream_from_config(config)  # pages verified as the appliance verifies them
    batch = batch or config["sync"]["changes_batch"]  # changes per page, as the worker asks for them
    runs = {state: [] for state in states}
    try:
        # As on the appliance, the counter app's readers stay open: closing
        # the feed's connection then neither checkpoints nor deletes the WAL,
        # and each run copies the WAL the previous run left into the database.
        with store.open_register():
            for _ in range(repeat):
                for state in states:
                    caught_up = apply_changes(upstream, store, batch=batch)  # a reused cloudsim state carries older changes: untimed
                    sim.make_changes(count, caught_up.last_seq)
                    prepare = PAGE_CACHE_STATES[state][1]
                    if prepare is not None:
                        prepare(store.path_of(store.current()).parent)
                    cpu_before = time.process_time()  # this process's threads: the writer and the fetcher
                    result = apply_changes(upstream, store, batch=batch)
                    cpu_seconds = time.process_time() - cpu_before
                    next_run = apply_changes(upstream, store, batch=batch)
                    changes = result.applied + result.skipped
                    runs[state].append({"changes": changes, "applied": result.applied, "pages": result.pages,
                                        "seconds": round(result.seconds, 2),
                                        "seconds_per_10000": round(result.seconds / changes * 10000, 2),
                                        "cpu_seconds_per_10000": round(cpu_seconds / changes * 10000, 2),
                                        "next_run_seconds": round(next_run.seconds, 2), "load_average": round(os.getloadavg()[0], 2),
                                        "batch": batch})
    finally:
        upstream.close()
    return {state: _median_run(state_runs) for state, state_runs in runs.items()}


def _median_run(runs: list[dict]) -> dict:
    """The median run (by seconds per 10,000), with every run's figures beside it."""
    ordered = sorted(runs, key=lambda run: run["seconds_per_10000"])
    return {**ordered[len(ordered) // 2], "all_seconds_per_10000": [run["seconds_per_10000"] for run in ordered],
            "all_cpu_seconds_per_10000": [run["cpu_seconds_per_10000"] for run in ordered],
            "all_load_averages": [run["load_average"] for run in ordered],
            "all_next_run_seconds": [run["next_run_seconds"] for run in ordered]}


def print_changes(by_state: dict, repeat: int) -> None:
    for state, ch in by_state.items():
        print(f"changes, {PAGE_CACHE_STATES[state][0]}: {ch['changes']:,} applied in {ch['seconds']:.2f} s ({ch['pages']} page(s) "
              f"of at most {ch['batch']:,}); {ch['seconds_per_10000']:.2f} s per 10,000 (median of {repeat}: "
              f"{', '.join(f'{t:.2f}' for t in ch['all_seconds_per_10000'])}; "
              f"CPU of the writer and fetcher threads {', '.join(f'{t:.2f}' for t in ch['all_cpu_seconds_per_10000'])} s; "
              f"load average {', '.join(f'{t:.1f}' for t in ch['all_load_averages'])}); "
              f"the next run, copying them from the WAL into the database: {', '.join(f'{t:.2f}' for t in ch['all_next_run_seconds'])} s",
              flush=True)


def bench_size(residents: int, args, work: Path) -> dict:
    print(f"\n== {residents:,} residents ==", flush=True)
    sim = CloudSimProcess(residents, args.state_dir)
    try:
        home = work / f"home-{residents}"
        env = appliance_env(home, sim)
        result = {"residents": residents}
        if args.only_changes:
            result["changes"] = changes_benchmark(sim, env, args.changes, args.repeat, args.batch, args.page_cache)
            print_changes(result["changes"], args.repeat)
            return result
        floors = sorted((floor(sim) for _ in range(args.repeat)), key=lambda run: run["seconds"])
        result["floor"] = {**floors[len(floors) // 2], "all_seconds": [run["seconds"] for run in floors]}
        print(f"floor (download + gunzip, orjson parse on {result['floor']['workers']} processes, no storing): {result['floor']['seconds']:.1f} s, "
              f"CPU {result['floor']['cpu_seconds']:.1f} s, "
              f"{result['floor']['records']:,} records (median of {args.repeat})", flush=True)
        loads = sorted((run_measured([SONAE, "sync", "full"], env) for _ in range(args.repeat)), key=lambda run: run["seconds"])
        result["load"] = {**loads[len(loads) // 2], "all_seconds": [run["seconds"] for run in loads]}
        load = result["load"]
        load["ratio_to_floor"] = round(load["seconds"] / result["floor"]["seconds"], 2)
        load["phases"] = load_phases(env)  # of the last run
        print(f"load  (`sonae sync full`): {load['seconds']:.1f} s wall, CPU {load['cpu_seconds']:.1f} s, peak RSS {load['peak_tree_rss_mb']} MB "
              f"(process tree; main process {load['main_maxrss_mb']} MB)  ×{load['ratio_to_floor']} of the floor (median of {args.repeat}: "
              f"{', '.join(f'{t:.1f}' for t in load['all_seconds'])} s)", flush=True)
        print("  where it went (the last run): " + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in load["phases"].items()), flush=True)
        result["certificate_font"] = font = certificate_font(env)
        print(f"certificate font (worker step after the load): {font['seconds']:.1f} s wall, CPU {font['cpu_seconds']:.1f} s, "
              f"peak RSS {font['peak_tree_rss_mb']} MB; {font['rare_glyphs']} rare glyph(s), {font['missing']} in no font"
              f"{'; error: ' + font['error'] if font['error'] else ''}", flush=True)
        os.environ.update({k: v for k, v in env.items() if k.startswith("SONAE_")})
        store = snapshot_store(load_config())
        result["snapshot_mb"] = round(sum(p.stat().st_size for p in store.path_of(store.current()).parent.iterdir()) / 1e6)
        print(f"snapshot: {result['snapshot_mb']} MB", flush=True)
        if not args.skip_verify:
            started = time.perf_counter()
            report = store.verify()
            result["verify"] = {"seconds": round(time.perf_counter() - started, 2), "ok": report.ok}
            print(f"verify: {result['verify']['seconds']:.1f} s, ok={report.ok}", flush=True)
        result["search"] = search_latency(env)
        worst = max(result["search"]["by_kind"].items(), key=lambda item: item[1]["p95_ms"])
        print(f"search: p50 {result['search']['p50_ms']} ms, p95 {result['search']['p95_ms']} ms over {result['search']['queries']} queries "
              f"(in process, no HTTP); slowest kind {worst[0]}: p95 {worst[1]['p95_ms']} ms", flush=True)
        if not args.skip_plain:
            result["encryption"] = encryption_cost(sim, work)
            enc = result["encryption"]
            print(f"build into plain SQLite {enc['plain']['seconds']:.1f} s vs SQLCipher {enc['sqlcipher']['seconds']:.1f} s: "
                  f"encryption ×{enc['ratio']}", flush=True)
        if residents == max(args.sizes) and args.changes:
            result["changes"] = changes_benchmark(sim, env, args.changes, args.repeat, args.batch, args.page_cache)
            print_changes(result["changes"], args.repeat)
        return result
    finally:
        sim.stop()


def extrapolate(results: list[dict], target: int = 4_000_000) -> dict | None:
    if len(results) < 2:
        return None
    small, large = results[0], results[-1]
    span = large["residents"] - small["residents"]

    def linear(a: float, b: float) -> float:
        return round(b + (b - a) / span * (target - large["residents"]), 1)

    return {"residents": target,
            "load_seconds": linear(small["load"]["seconds"], large["load"]["seconds"]),
            "peak_tree_rss_mb": linear(small["load"]["peak_tree_rss_mb"], large["load"]["peak_tree_rss_mb"]),
            "snapshot_mb": linear(small["snapshot_mb"], large["snapshot_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=None, help="changes per feed page (default: the shipped sync.changes_batch)")
    parser.add_argument("--state-dir", type=Path, default=ROOT / "bench" / "results" / "cloudsim")
    parser.add_argument("--work-dir", type=Path, default=None, help="appliance homes (default: a temporary directory)")
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain-SQLite comparison")
    parser.add_argument("--skip-verify", action="store_true", help="skip `sonae snapshot verify` of the new generation (≈ 2 min a million residents)")
    parser.add_argument("--repeat", type=int, default=1, help="floor, load and change-feed runs per size; the median is reported")
    parser.add_argument("--page-cache", nargs="+", choices=list(PAGE_CACHE_STATES), default=["warm", "cold"],
                        help="the page-cache states the change feed is timed in, taking turns (default: warm cold)")
    parser.add_argument("--only-changes", action="store_true",
                        help="only the change feed, applied to the generation a previous run left in --work-dir")
    args = parser.parse_args()
    args.sizes.sort()
    if args.only_changes and not args.work_dir:
        parser.error("--only-changes needs the --work-dir of an earlier run")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-sync-work-"))
    print(f"bench_sync on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; work dir {work}")
    results = [bench_size(size, args, work) for size in args.sizes]
    projection = None if args.only_changes else extrapolate(results)
    if projection:
        print(f"\nlinear extrapolation to {projection['residents']:,} residents: load ≈ {projection['load_seconds']:.0f} s, "
              f"peak RSS ≈ {projection['peak_tree_rss_mb']:.0f} MB, snapshot ≈ {projection['snapshot_mb']:.0f} MB")
    out = ROOT / "bench" / "results" / f"sync-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0], "sizes": results,
                               "extrapolation": projection}, indent=2))
    print(f"\nresults: {out}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
