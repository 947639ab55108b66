-- The Raft log store (its own SQLite file, synchronous=FULL).
CREATE TABLE log (
    idx   INTEGER PRIMARY KEY,
    entry TEXT NOT NULL
);
CREATE TABLE log_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
