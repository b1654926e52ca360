-- The shared event log: one total order for every node (src/log/postgres_store.rs).
--
-- A batch is appended in one transaction that holds the append lock (a transaction-level
-- advisory lock) while it reads the last seq and inserts the batch after it, so seqs are dense
-- and commit in order: a tailer reading `seq > last` never passes a seq that commits later.

-- Each event: its seq and its envelope, the bytes the log's encoding wrote (JSON, without the
-- seq, which is the key).
CREATE TABLE log_events (
    seq  BIGINT PRIMARY KEY CHECK (seq > 0),
    body BYTEA  NOT NULL
);

-- One user's history without a scan: a row per (uid, event) for each uid the event names.
CREATE TABLE log_uids (
    uid TEXT   NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (uid, seq)
);

-- Each batch, under the id its writer gave it (its first event's event_id): an append retried
-- after a lost commit answer finds its batch here instead of recording it twice.
CREATE TABLE log_batches (
    batch_id     UUID        PRIMARY KEY,
    first_seq    BIGINT      NOT NULL,
    last_seq     BIGINT      NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
