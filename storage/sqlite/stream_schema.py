"""Tables of the live stream's log (storage/sqlite/stream.py)."""

from __future__ import annotations

STREAM_DDL = """
CREATE TABLE IF NOT EXISTS stream (
    fleet_id TEXT NOT NULL,
    block INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    n INTEGER NOT NULL,  -- entries in the block
    data BLOB NOT NULL,  -- JSON, storage/stream.py pack: entries or runs of positions
    PRIMARY KEY (fleet_id, block)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stream_by_age ON stream (created_ms);
-- block: the fleet's last block number; head: its last cursor; pruned: the last cursor
-- removed by retention (resuming needs a cursor at least this).
CREATE TABLE IF NOT EXISTS stream_seq (
    fleet_id TEXT PRIMARY KEY,
    block INTEGER NOT NULL,
    head INTEGER NOT NULL,
    pruned INTEGER NOT NULL DEFAULT 0
);
"""
STREAM_FLEET_TABLES = ("stream", "stream_seq")
