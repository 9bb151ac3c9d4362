"""cloudsim: a stand-in for the vendor's cloud register, serving the upstream
contract (shared/contract/README.md) with a seeded synthetic register of a
Tokyo ward, a live change feed and fault switches. Nothing outside cloudsim
imports it; it imports only sync.contract and sync.synthetic from the rest
of Sonae.

From Python (tests, the demo)::

    from cloudsim.sim import start_cloudsim
    sim = start_cloudsim(state_dir, residents=20_000, seed=1)   # ports 0: free ones
    sim.url, sim.admin_url, sim.token, sim.public_key, sim.export_id
    sim.feed.make(10)               # ten events happen in the ward now
    sim.faults.set("down"); sim.faults.clear("down")
    sim.publish()                   # a new full export
    sim.stop()

From the shell: `sonae cloudsim serve|public-key|export|publish|changes|status|fault`.

The register model (synth, refdata, codes, sealimage and their data) is
sync.synthetic, part of Sonae: the appliance's drills draw their synthetic
register from the same model. Here, generate fills the SQLite state (store)
on all cores; exports writes signed gzip NDJSON exports (gzjoin); register
owns the state directory; changes is the change feed; faults the switches;
server the two HTTP ports; sim ties them together.
"""
