-- WormFS metadata schema, version 7: the cluster's accounts.
-- WebDAV users, shared by every machine: the password's Argon2id hash (PHC string), the role
-- ('ro', 'rw' or 'admin') and where the user came from ('cli', 'generated', or
-- 'config node N': a `[[webdav.users]]` entry of that node's config file, imported at its start).
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    source        TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    changed_ms    INTEGER NOT NULL
);
-- API tokens: only the BLAKE3 of each token (hex) is kept. A revoked token's row stays (with
-- `revoked_ms`), so that the machine whose local token it was does not register it again; a
-- name is unique among live tokens only.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    read_only  INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    -- The machine whose local `admin-token` file this is, if it is one.
    node       INTEGER,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_ms IS NULL;
