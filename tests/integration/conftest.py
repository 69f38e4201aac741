"""Fixtures every integration test module may use by name: the live API over real HTTP
(`live_server`) and a files worker for it (`files_worker`), see live_server.py."""

from tests.integration.live_server import files_worker, live_server

__all__ = ["files_worker", "live_server"]
