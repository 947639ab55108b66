-- WormFS metadata schema, version 5: self-healing. Disks have a replicated state (up, down,
-- out, draining, drained, removed) with its reason and since when; each part remembers when it
-- was last verified (written or scrubbed); the repair queue holds the segments to rebuild or
-- move, most endangered first.
UPDATE disks SET state = 'up' WHERE state = 'active';
ALTER TABLE disks ADD COLUMN state_since_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN reason TEXT NOT NULL DEFAULT '';
-- state: 0 healthy, 1 missing, 2 damaged (found corrupt or unreadable on a readable disk).
ALTER TABLE parts ADD COLUMN verified_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX parts_by_verified ON parts (disk_id, verified_ms);
-- tolerance: parts available beyond the k needed, when last computed (lower is more urgent;
-- negative means unreadable until a disk comes back).
CREATE TABLE repair_queue (
    file_id        BLOB NOT NULL,
    seg            INTEGER NOT NULL,
    tolerance      INTEGER NOT NULL,
    due_ms         INTEGER NOT NULL,
    attempts       INTEGER NOT NULL,
    last_error     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    added_ms       INTEGER NOT NULL,
    claimed_by     INTEGER,
    claim_until_ms INTEGER NOT NULL,
    PRIMARY KEY (file_id, seg)
);
CREATE INDEX repair_queue_order ON repair_queue (tolerance, added_ms);
-- Parts to move off a disk that stays in use (rebalancing): rewritten elsewhere by the repair
-- queue, read from where they are; done once the part is no longer on from_disk.
CREATE TABLE part_moves (
    file_id   BLOB NOT NULL,
    seg       INTEGER NOT NULL,
    part      INTEGER NOT NULL,
    from_disk TEXT NOT NULL,
    added_ms  INTEGER NOT NULL,
    PRIMARY KEY (file_id, seg, part)
);
