-- WormFS metadata schema, version 3: WebDAV dead properties and locks, replicated like the rest.
-- Dead properties belong to an entry row, so they follow a MOVE (the row is renamed) and are
-- copied by a COPY; ns is '' for properties without a namespace.
CREATE TABLE props (
    entry  INTEGER NOT NULL,
    ns     TEXT NOT NULL,
    name   TEXT NOT NULL,
    prefix TEXT,
    xml    BLOB,
    PRIMARY KEY (entry, ns, name)
);
-- Locks are on paths (a lock may name a URL that does not exist yet).
CREATE TABLE locks (
    token        TEXT PRIMARY KEY,
    path         TEXT NOT NULL,
    href         TEXT NOT NULL,
    principal    TEXT,
    owner_xml    BLOB,
    expires_ms   INTEGER NOT NULL,
    timeout_secs INTEGER NOT NULL,
    shared       INTEGER NOT NULL,
    deep         INTEGER NOT NULL
);
CREATE INDEX locks_by_path ON locks (path);
