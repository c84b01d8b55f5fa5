"""SQLite tables of remote commands: commands, their audit log, fleet policies, alerts.

Kept apart from storage/sqlite/schema.py (which runs this DDL after its own) so the command
feature reads as one piece. Every index serves a query of storage/sqlite/commands.py.
"""

from __future__ import annotations

# Tables holding records of a fleet, by fleet_id: erased with the fleet. ``command_seqs`` is
# not one of them on purpose: it is keyed by IMEI and must outlive an erasure, because the box
# remembers the numbers it executed and a re-provisioned box must never get one again.
COMMAND_FLEET_TABLES = (
    "commands",
    "command_audit",
    "command_policies",
    "alerts",
    "vehicle_lock_states",
)

COMMAND_DDL = """
CREATE TABLE IF NOT EXISTS command_seqs (
    imei TEXT PRIMARY KEY,
    last INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    imei TEXT NOT NULL,
    kind TEXT NOT NULL,
    param INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    ttl_s INTEGER NOT NULL,
    requested_by TEXT,
    reason TEXT NOT NULL,
    theft_case_id TEXT,
    idempotency_key TEXT,
    approved_by TEXT,
    approved_ms INTEGER,
    sent_ms INTEGER,
    delivered_ms INTEGER,
    completed_ms INTEGER,
    attempts INTEGER NOT NULL,
    failure TEXT,
    result_state INTEGER,
    gateway_id TEXT,
    cancelled_by TEXT,
    -- NULLs are distinct in a UNIQUE constraint: commands without a key never collide.
    UNIQUE (fleet_id, idempotency_key)
);
-- A command number is never given twice to one box: correlation of COMMAND_RESULTs.
CREATE UNIQUE INDEX IF NOT EXISTS commands_by_seq ON commands (imei, seq);
CREATE INDEX IF NOT EXISTS commands_by_fleet ON commands (fleet_id, created_ms, id);
CREATE INDEX IF NOT EXISTS commands_by_vehicle
    ON commands (fleet_id, vehicle_id, created_ms, id);
-- The gateway's polls (queued since, sent before) and the expiry sweep.
CREATE INDEX IF NOT EXISTS commands_by_status ON commands (status, updated_ms);
CREATE INDEX IF NOT EXISTS commands_live_expiry ON commands (expires_ms)
    WHERE status IN ('pending_approval', 'queued', 'sent');

CREATE TABLE IF NOT EXISTS command_audit (
    id TEXT PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    fleet_id TEXT,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    key_id TEXT,
    vehicle_id TEXT,
    command_id TEXT,
    status TEXT,
    reason TEXT NOT NULL,
    theft_case_id TEXT,
    detail TEXT NOT NULL,
    -- its link in the fleet's hash chain (storage/audit_chain.py; index in CHAIN_DDL)
    seq INTEGER NOT NULL DEFAULT 0,
    prev_hash TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_audit_by_fleet ON command_audit (fleet_id, time_ms, id);
CREATE INDEX IF NOT EXISTS command_audit_by_vehicle
    ON command_audit (fleet_id, vehicle_id, time_ms, id);
CREATE INDEX IF NOT EXISTS command_audit_by_command ON command_audit (command_id);

CREATE TABLE IF NOT EXISTS command_policies (
    fleet_id TEXT PRIMARY KEY,
    four_eyes INTEGER NOT NULL,
    engine_start_cap_per_hour INTEGER,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT
) WITHOUT ROWID;

-- Platform-wide switches by name ("kill_switch"); no fleet data.
CREATE TABLE IF NOT EXISTS platform_switches (
    name TEXT PRIMARY KEY,
    engaged INTEGER NOT NULL,
    reason TEXT NOT NULL,
    changed_ms INTEGER NOT NULL,
    changed_by TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    raised_ms INTEGER NOT NULL,
    device_id TEXT,
    vehicle_id TEXT,
    detail TEXT NOT NULL,
    freezes_commands INTEGER NOT NULL,
    cleared_ms INTEGER,
    cleared_by TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_by_fleet ON alerts (fleet_id, raised_ms, id);
CREATE INDEX IF NOT EXISTS alerts_open_by_device ON alerts (device_id) WHERE cleared_ms IS NULL;
CREATE INDEX IF NOT EXISTS alerts_open_by_vehicle ON alerts (vehicle_id) WHERE cleared_ms IS NULL;

CREATE TABLE IF NOT EXISTS vehicle_lock_states (
    vehicle_id TEXT PRIMARY KEY,
    fleet_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    doors_locked INTEGER NOT NULL,
    engine_start_inhibited INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    command_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vehicle_lock_states_by_fleet ON vehicle_lock_states (fleet_id);
"""
