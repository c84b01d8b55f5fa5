"""Asyncio plumbing every long-running part of gp8 shares: a periodic job (`Periodic`).

Below every layer (it imports nothing of gp8), so storage-level jobs (retention), tracking
(the offline sweep) and the API (the stream pruner, the export worker) run the same loop.
"""

from runtime.periodic import Periodic

__all__ = ["Periodic"]
