"""facegen_client: a Python client for the facegen face service (sync and asyncio), plus the
``facegen-client`` command for bulk generation and for encoding folders of photos.

Needs only httpx, numpy, Pillow, tqdm and safetensors (no torch).
"""

from facegen_client._api import Encoding, Faces, RetryPolicy
from facegen_client.aio import AsyncClient
from facegen_client.client import Client
from facegen_client.errors import APIError, FacegenError

__all__ = ["APIError", "AsyncClient", "Client", "Encoding", "FacegenError", "Faces", "RetryPolicy"]
__version__ = "0.1.0"
