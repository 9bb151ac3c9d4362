"""Steady-state freshness: how old the appliance's data is while the worker
follows a live change feed.

    python bench/bench_lag.py --residents 100000 --minutes 6

Starts cloudsim with a live change feed, loads the full export, starts
`sonae worker` with the change feed every `--interval` seconds (60 by
default, the shipped setting), and samples the snapshot's data-as-of every
2 s. Lag = now − data-as-of. The baseline in the same run is the feed
interval itself: a mirror polled every 60 s cannot be fresher than that on
average, so the figures are printed as ratios to it. The target is a
worst-case lag ≤ 120 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fallback.demo.commands import DemoSite  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--interval", type=int, default=60, help="sync.changes_interval_s")
    parser.add_argument("--dir", default="/var/tmp/sonae-bench-lag")
    parser.add_argument("--port", type=int, default=8290)
    args = parser.parse_args()

    site = DemoSite(Path(args.dir), residents=args.residents, seed=11, web_port=args.port, upstream_port=args.port + 100)
    try:
        upstream = site.start_cloudsim()
        site.configure(upstream, extra={"sync": {"changes_interval_s": args.interval}, "probes": {"interval_s": 20}})
        print(site.run("sync", "full", "--actor", "bench").strip())
        os.environ.update(site.env)
        from fallback.config import load_config
        from fallback.mirror.registry import snapshot_store

        store = snapshot_store(load_config())
        site.start("worker", log="bench-lag-worker.log")
        lags, stop_at = [], time.monotonic() + args.minutes * 60
        warmup_until = time.monotonic() + args.interval + 10  # the first feed turn catches up from the export
        while time.monotonic() < stop_at:
            with store.open_register() as register:
                as_of = register.meta.as_of
            lag = (dt.datetime.now(dt.UTC) - as_of).total_seconds()
            if time.monotonic() > warmup_until:
                lags.append(lag)
            time.sleep(2)
        lags.sort()
        print(f"\n== data-as-of lag with a {args.interval} s feed interval, cloudsim's default change rate, "
              f"{args.residents:,} residents, {len(lags)} samples over {args.minutes:g} min ==")
        for label, value in (("mean", statistics.fmean(lags)), ("p95", lags[int(0.95 * (len(lags) - 1))]), ("max", lags[-1])):
            print(f"{label:5} lag {value:6.1f} s   ratio to the interval {value / args.interval:4.2f}")
        print(f"target: max ≤ 120 s -> {'met' if lags[-1] <= 120 else 'NOT met'}")
    finally:
        site.stop()


if __name__ == "__main__":
    main()
