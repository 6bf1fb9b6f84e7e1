"""``python -m bench --peers``: facegen against serving frameworks on the same artifact.

``handler`` is the seeds -> PNGs work both peers run (facegen's own per-row work, or one
forward pass per batch); ``torchserve`` and ``pytriton`` start each framework around it;
``protocol`` builds and parses each system's requests; ``procs`` reads a server's whole
process tree from /proc; ``run`` drives the interleaved rounds and prints the table.
See docs/bench.md, section "Peers". Nothing here is imported by the default install.
"""
