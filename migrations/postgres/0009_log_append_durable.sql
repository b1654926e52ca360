-- The shared log's append and its flush in one statement (src/log/postgres_store.rs): a
-- procedure that calls `wk_log_append_after` (0008), commits, and then makes that commit
-- durable in a second transaction of its own, before the CALL answers.
--
-- Why: the append commits without waiting for its WAL flush, so that the append lock is not
-- held through a flush (src/log/postgres_store/durable.rs). The flush was a second statement,
-- sent once the append had answered: a second round trip per batch, with the node and the
-- backend each woken once more for it. Inside a procedure both transactions run on the server
-- back to back.
--
-- Called with CALL outside any transaction block, on a connection whose `synchronous_commit`
-- is off: the COMMIT below then releases the append lock as soon as the batch's commit record
-- is written; the transaction after it writes one WAL record (a transactional logical message,
-- as `wk_log_flush` did) and commits with `synchronous_commit` on, which flushes the WAL up to
-- that record, so past the batch's commit. A procedure with a SET clause may not commit, so
-- the generic plans stay on the function (0008), where they were.
--
-- A batch found recorded (a retry) is flushed the same way: its first try's commit may not have
-- been. A batch whose guards broke records nothing: nothing to flush. An error after the
-- COMMIT is raised with SQLSTATE 58000 (system_error): the batch is committed, and a caller
-- that reads class 58 as "outcome unknown" looks it up by its id before trying again.
CREATE PROCEDURE wk_log_append_durable(
    p_batch_id        uuid,
    p_bodies          bytea[],
    p_uids            text[],
    p_uid_events      int4[],
    p_guard_uids      text[],
    p_guard_after     int8[],
    p_writer_id       int8,
    p_retry           boolean,
    p_after           int8,
    p_gap_limit       int4,
    OUT first_seq     int8,
    OUT conflict_uids text[],
    OUT gap_seqs      int8[],
    OUT gap_bodies    bytea[]
)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.first_seq, a.conflict_uids, a.gap_seqs, a.gap_bodies
      INTO first_seq, conflict_uids, gap_seqs, gap_bodies
      FROM wk_log_append_after(p_batch_id, p_bodies, p_uids, p_uid_events, p_guard_uids,
                               p_guard_after, p_writer_id, p_retry, p_after, p_gap_limit) AS a;
    COMMIT;
    IF first_seq IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM set_config('synchronous_commit', 'on', true),
                pg_logical_emit_message(true, 'wk_log_flush', '');
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION USING ERRCODE = '58000',
            MESSAGE = 'wk_log_append_durable: the batch is committed, its flush failed: ' || SQLERRM;
    END;
END
$$;
