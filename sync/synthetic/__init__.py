"""The synthetic register of a Tokyo ward: the model (synth) and what it
draws on (refdata and data/, codes, sealimage).

It lives in Sonae, not in cloudsim, because two users need the same people:
cloudsim serves them as the stand-in upstream (demo, tests, benches), and the
appliance's drills load a small register from it so that a drill never
touches real records (fallback/drills/register.py). Nothing here reads or
writes a snapshot; `export` turns records into a signed export the real
loader takes.
"""
