"""facegen's benchmark: the served throughput and latency, next to the raw model's ceiling.

``python -m bench`` starts the service itself (or targets ``--url``), drives it with an
asyncio + httpx load generator, measures the raw decoder (+PNG) in-process, and prints a
table, the batching ratios and the issue's target checks; ``--out`` writes the same as JSON.
It imports ``facegen_core`` and ``service.imaging`` only: it is a client of the service.
"""
