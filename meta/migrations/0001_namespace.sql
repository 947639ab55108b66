-- WormFS metadata schema, version 1: the namespace, files, segments, parts, disks, nodes, intents.
CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Directories and files as (parent, name) rows; id 1 is the root.
CREATE TABLE entries (
    id       INTEGER PRIMARY KEY,
    parent   INTEGER NOT NULL,
    name     TEXT NOT NULL,
    is_dir   INTEGER NOT NULL,
    file_id  BLOB,
    policy   TEXT,
    mtime_ms INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX entries_by_file ON entries (file_id);
INSERT INTO entries (id, parent, name, is_dir, mtime_ms) VALUES (1, 0, '', 1, 0);
CREATE TABLE files (
    file_id        BLOB PRIMARY KEY,
    size           INTEGER NOT NULL,
    policy         TEXT NOT NULL,
    geometry       TEXT NOT NULL,
    content_blake3 TEXT,
    etag           TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    mtime_ms       INTEGER NOT NULL,
    source         TEXT NOT NULL
);
CREATE TABLE segments (
    file_id  BLOB NOT NULL,
    seg      INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    data_len INTEGER NOT NULL,
    blake3   TEXT NOT NULL,
    PRIMARY KEY (file_id, seg)
);
-- state: 0 healthy, 1 missing (to repair).
CREATE TABLE parts (
    file_id BLOB NOT NULL,
    seg     INTEGER NOT NULL,
    part    INTEGER NOT NULL,
    disk_id TEXT,
    state   INTEGER NOT NULL,
    PRIMARY KEY (file_id, seg, part)
);
CREATE INDEX parts_by_disk ON parts (disk_id);
CREATE TABLE disks (
    disk_id  TEXT PRIMARY KEY,
    node_id  INTEGER NOT NULL,
    path     TEXT NOT NULL,
    fs_dev   INTEGER NOT NULL,
    state    TEXT NOT NULL,
    added_ms INTEGER NOT NULL
);
CREATE TABLE nodes (
    node_id   INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,
    api_addr  TEXT NOT NULL,
    joined_ms INTEGER NOT NULL
);
-- target_file_id: the file whose parts the ingest writes (its own id, or the file appended to).
CREATE TABLE intents (
    file_id        BLOB PRIMARY KEY,
    target_file_id BLOB NOT NULL,
    writer         INTEGER NOT NULL,
    path           TEXT NOT NULL,
    append         INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL
);
CREATE INDEX intents_by_target ON intents (target_file_id);
-- Committed drop-folder sources, so a restarted watcher only removes the original.
CREATE TABLE sources (
    key     TEXT PRIMARY KEY,
    file_id BLOB NOT NULL
);
