-- The SQL view of the shared event log: every row here is derived from events, and the whole
-- view can be rebuilt by replaying the log into an empty database. The same tables, columns
-- and meaning as migrations/sqlite: times are milliseconds since the Unix epoch (the events'
-- recorded_at); seqs point back into the log. Text that rows are ordered or paged by compares
-- bytewise (COLLATE "C"), as SQLite compares it, so that both engines list rows in one order
-- whatever the database's default collation. Session and boot ids are uuids: their order is
-- the order of their text, as SQLite holds them.

CREATE TABLE users (
    uid         TEXT COLLATE "C" PRIMARY KEY,
    created_seq BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One row per (uid, device_flag) ever given a token. token_hash is the SHA-256 of the token in
-- hex, NULL once a device quit cleared it. The token itself is never stored.
CREATE TABLE tokens (
    uid          TEXT COLLATE "C" NOT NULL,
    device_flag  BIGINT NOT NULL,
    device_level BIGINT NOT NULL,
    token_hash   TEXT,
    updated_seq  BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (uid, device_flag)
);

-- Every device session, open (disconnected_seq IS NULL) and closed.
CREATE TABLE device_sessions (
    session_id       UUID PRIMARY KEY,
    uid              TEXT COLLATE "C" NOT NULL,
    device_flag      BIGINT NOT NULL,
    device_level     BIGINT NOT NULL,
    device_id        TEXT NOT NULL,
    node_id          BIGINT NOT NULL,
    peer             TEXT NOT NULL,
    connected_seq    BIGINT NOT NULL,
    connected_at     BIGINT NOT NULL,
    disconnected_seq BIGINT,
    disconnected_at  BIGINT,
    reason           TEXT
);
-- A user's history, newest first, paged by session_id.
CREATE INDEX device_sessions_by_uid ON device_sessions (uid, session_id);
-- The open sessions, in the order start-up reads them.
CREATE INDEX device_sessions_open ON device_sessions (connected_seq)
    WHERE disconnected_seq IS NULL;

CREATE TABLE system_uids (
    uid       TEXT COLLATE "C" PRIMARY KEY,
    added_seq BIGINT NOT NULL
);

-- Each server lifetime, from its NodeStarted to its NodeStopped (NULL: it did not stop cleanly).
CREATE TABLE node_lifetimes (
    boot_id     UUID PRIMARY KEY,
    node_id     BIGINT NOT NULL,
    version     TEXT NOT NULL,
    started_seq BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    stopped_seq BIGINT,
    stopped_at  BIGINT
);

-- The last seq applied. Written in the same transaction as the rows it accounts for; a writer
-- locks this row first, so that two writers of the view take turns and neither applies an
-- event the other already has.
CREATE TABLE projector_checkpoint (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO projector_checkpoint (id, last_seq) VALUES (1, 0);
