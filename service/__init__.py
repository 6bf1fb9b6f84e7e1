"""facegen's HTTP service: FastAPI app, dynamic batcher and model worker."""
