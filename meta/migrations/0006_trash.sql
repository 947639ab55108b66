-- WormFS metadata schema, version 6: the trash and retention locks.
-- A trash row is a deleted (or replaced) file's name: the file's rows (files, segments, parts)
-- stay while an entry or a trash row names it. `path` is the entry's full path when it went;
-- dead properties are not kept.
CREATE TABLE trash (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id    BLOB NOT NULL,
    path       TEXT NOT NULL,
    deleted_ms INTEGER NOT NULL,
    mtime_ms   INTEGER NOT NULL
);
CREATE INDEX trash_by_file ON trash (file_id);
CREATE INDEX trash_by_age ON trash (deleted_ms);
-- Directories: the retention (ms) given to files committed below them (NULL: inherited).
ALTER TABLE entries ADD COLUMN retain_ms INTEGER;
-- Files: the entry cannot be deleted, replaced, moved or renamed before this time (ms).
ALTER TABLE entries ADD COLUMN retain_until_ms INTEGER;
-- Small (only retained files): lets a removal skip the walk of its subtree when no file in the
-- whole tree is retained.
CREATE INDEX entries_retained ON entries (retain_until_ms) WHERE retain_until_ms IS NOT NULL;
