-- The archive boundary of the shared log (protocol.md section 10, src/archive): after
-- `wkuser archive --database-url`, log_events holds only the events after `seq`, and `body`
-- (zstd-compressed JSON) names the archives that hold the rest and the view's state rows at
-- `seq`. Written in the same transaction that deletes the archived range.
CREATE TABLE log_boundary (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL CHECK (seq > 0),
    body BYTEA NOT NULL
);
