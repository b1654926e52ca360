-- The SQL view of the event log: every row here is derived from events, and the whole view can
-- be rebuilt by replaying the log into an empty database. Times are milliseconds since the Unix
-- epoch (the events' recorded_at); seqs point back into the log.

CREATE TABLE users (
    uid         TEXT PRIMARY KEY NOT NULL,
    created_seq INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One row per (uid, device_flag) ever given a token. token_hash is the SHA-256 of the token in
-- hex, NULL once a device quit cleared it. The token itself is never stored.
CREATE TABLE tokens (
    uid          TEXT NOT NULL,
    device_flag  INTEGER NOT NULL,
    device_level INTEGER NOT NULL,
    token_hash   TEXT,
    updated_seq  INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (uid, device_flag)
);

-- Every device session, open (disconnected_seq IS NULL) and closed.
CREATE TABLE device_sessions (
    session_id       TEXT PRIMARY KEY NOT NULL,
    uid              TEXT NOT NULL,
    device_flag      INTEGER NOT NULL,
    device_level     INTEGER NOT NULL,
    device_id        TEXT NOT NULL,
    node_id          INTEGER NOT NULL,
    peer             TEXT NOT NULL,
    connected_seq    INTEGER NOT NULL,
    connected_at     INTEGER NOT NULL,
    disconnected_seq INTEGER,
    disconnected_at  INTEGER,
    reason           TEXT
);
CREATE INDEX device_sessions_by_uid ON device_sessions (uid, session_id);
CREATE INDEX device_sessions_open ON device_sessions (disconnected_seq) WHERE disconnected_seq IS NULL;

CREATE TABLE system_uids (
    uid       TEXT PRIMARY KEY NOT NULL,
    added_seq INTEGER NOT NULL
);

-- Each server lifetime, from its NodeStarted to its NodeStopped (NULL: it did not stop cleanly).
CREATE TABLE node_lifetimes (
    boot_id     TEXT PRIMARY KEY NOT NULL,
    node_id     INTEGER NOT NULL,
    version     TEXT NOT NULL,
    started_seq INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    stopped_seq INTEGER,
    stopped_at  INTEGER
);

-- The last seq applied. Written in the same transaction as the rows it accounts for.
CREATE TABLE projector_checkpoint (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
INSERT INTO projector_checkpoint (id, last_seq) VALUES (1, 0);
