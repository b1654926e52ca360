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
