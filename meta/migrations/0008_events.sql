-- WormFS metadata schema, version 8: the cluster's events (docs/operations.md, "Events").
-- What happened, newest last: disks going down, out and back, corruption found and repaired,
-- machines joining and leaving, leader changes, metadata backups written. Rows are written by
-- the apply of the commands that cause them (so every machine holds the same history) or by a
-- `RecordEvent` command, and only the newest 10,000 are kept.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    severity TEXT NOT NULL,
    node     INTEGER,
    disk     TEXT,
    path     TEXT,
    message  TEXT NOT NULL
);
-- Damaged parts (found corrupt, not rewritten yet), counted by the alerts every few seconds.
CREATE INDEX parts_damaged ON parts (file_id, seg) WHERE state = 2;
