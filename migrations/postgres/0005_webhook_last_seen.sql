-- The online-status webhook's delivery cursor (src/webhook/cursor_pg.rs): the one row of state
-- the webhook keeps, shared by every node; the entries themselves are read from log_events.
-- One node delivers at a time (a session-level advisory lock), and only that node writes
-- this row, through the connection that holds the lock.
--
-- delivered: every entry up to this seq was answered 2xx. in_flight_to: the batch
-- delivered+1..in_flight_to was sent (or was about to be) without a known answer; the next
-- node to deliver sends exactly that batch again. node_id and updated_at say who wrote it last.
CREATE TABLE webhook_cursor (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    delivered    BIGINT NOT NULL CHECK (delivered >= 0),
    in_flight_to BIGINT NOT NULL CHECK (in_flight_to >= delivered),
    node_id      BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Last seen (protocol.md section 8): when each (uid, device_flag) last had a session end, the
-- Disconnected with the highest seq of that uid and flag. Part of the view (derived from the
-- log like every table of 0002): memory answers /user/lastseen from it after a restart
-- without reading every session ever recorded. The same table as migrations/sqlite.
CREATE TABLE last_seen (
    uid         TEXT COLLATE "C" NOT NULL,
    device_flag BIGINT NOT NULL,
    seen_seq    BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL,
    PRIMARY KEY (uid, device_flag)
);
-- A database whose view was projected before this table: filled from the sessions it holds.
INSERT INTO last_seen (uid, device_flag, seen_seq, seen_at)
SELECT DISTINCT ON (uid, device_flag) uid, device_flag, disconnected_seq, disconnected_at
FROM device_sessions WHERE disconnected_seq IS NOT NULL
ORDER BY uid, device_flag, disconnected_seq DESC;
