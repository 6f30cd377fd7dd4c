"""The HTTP API: a FastAPI app under ``/v1`` whose routes stay thin."""
