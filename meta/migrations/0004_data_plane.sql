-- WormFS metadata schema, version 4: each node's part-data address and the SHA-256 fingerprint
-- of its data-plane certificate (hex), pinned here for every peer to check.
ALTER TABLE nodes ADD COLUMN data_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN data_cert TEXT NOT NULL DEFAULT '';
