"""``python -m bench --peers``: facegen against serving frameworks on the same artifact.

``handler`` is the seeds -> PNGs work both peers run (facegen's own per-row work, or one
forward pass per batch); ``torchserve`` (with ``ts_entry``, TorchServe's handler module) and
``pytriton`` start each framework around it, ``server`` runs and stops its process tree;
``protocol`` builds and parses each system's requests; ``counters`` reads each system's own
model-call counts; ``identity`` checks the peers' pixels against facegen's; ``procs`` reads a
server's whole process tree from /proc; ``run`` drives the interleaved rounds; ``report``
makes the medians, ratios and table.
See docs/bench.md, section "Peers". Only the peer servers import the frameworks (the
``peers`` extra): the rest, and the tests of tests/bench/test_peers.py, run without them.
"""
