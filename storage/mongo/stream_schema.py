"""Collections of the live stream's log (storage/mongo/stream.py)."""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

STREAM = "stream"
# _id (and fleet_id, for erasure): the fleet; block: its last block number; pruned: the last
# cursor removed by retention.
STREAM_SEQ = "stream_seq"
STREAM_FLEET_COLLECTIONS = (STREAM, STREAM_SEQ)
STREAM_INDEXES: dict[str, list[IndexModel]] = {
    STREAM: [
        IndexModel(
            [("fleet_id", ASCENDING), ("block", ASCENDING)], unique=True, name="fleet_block"
        ),
        # Retention: prune drops entries by age.
        IndexModel([("created_ms", ASCENDING)], name="age"),
    ],
}
