-- An append of the shared log in one statement (src/log/postgres_store.rs): the append lock,
-- the lookup of a retried batch, the guards, the numbering and the inserts all run inside the
-- database, so that the lock is held for the server's own work and the commit, never across a
-- round trip to a node (on a busy machine each round trip can cost milliseconds, and every
-- node's appends wait behind the holder).
--
-- Called as a statement of its own outside any transaction block: the statement's implicit
-- transaction commits when it ends, which releases the lock. Each statement below takes a new
-- snapshot (a VOLATILE function under READ COMMITTED), so the statements after the lock see
-- every batch committed before the lock was granted; under a stricter isolation level the
-- snapshot would be older than the lock, and the function refuses to run.
--
-- Returns the batch's first seq, or every uid whose guard does not hold (nothing recorded: the
-- caller leaves out the commands of those uids and appends the rest again).
-- A batch already recorded (a retry after a lost answer) returns its first seq and records
-- nothing. After recording, it rings the `wk_log` doorbell with `<writer id> <last seq>`:
-- delivered at the commit, it wakes the other nodes' tails at once.
CREATE FUNCTION wk_log_append(
    p_batch_id    uuid,
    p_bodies      bytea[],
    p_uids        text[],
    p_uid_events  int4[],   -- for each of p_uids, the 1-based position of its event in p_bodies
    p_guard_uids  text[],
    p_guard_after int8[],   -- for each of p_guard_uids, the seq after which it must have no event
    p_writer_id   int8     -- the appending store, named in the doorbell so that it can ignore its own
) RETURNS TABLE (first_seq int8, conflict_uids text[])
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_last  int8;
    v_count int8 := coalesce(cardinality(p_bodies), 0);
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wk_log_append needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    IF v_count = 0 THEN
        RAISE EXCEPTION 'wk_log_append: an empty batch';
    END IF;
    PERFORM pg_advisory_xact_lock(512903376743); -- APPEND_LOCK, "wklog"

    SELECT b.first_seq INTO first_seq FROM log_batches b WHERE b.batch_id = p_batch_id;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT array_agg(DISTINCT g.uid) INTO conflict_uids
      FROM unnest(p_guard_uids, p_guard_after) AS g(uid, after)
     WHERE EXISTS (SELECT 1 FROM log_uids l WHERE l.uid = g.uid AND l.seq > g.after);
    IF conflict_uids IS NOT NULL THEN
        first_seq := NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT coalesce(max(e.seq), 0) INTO v_last FROM log_events e;
    INSERT INTO log_events (seq, body)
        SELECT v_last + t.i, t.body FROM unnest(p_bodies) WITH ORDINALITY AS t(body, i);
    -- An event that names a uid twice is indexed under it once, as sled's keys do.
    INSERT INTO log_uids (uid, seq)
        SELECT t.uid, v_last + t.i FROM unnest(p_uids, p_uid_events) AS t(uid, i)
        ON CONFLICT DO NOTHING;
    INSERT INTO log_batches (batch_id, first_seq, last_seq)
        VALUES (p_batch_id, v_last + 1, v_last + v_count);
    PERFORM pg_notify('wk_log', p_writer_id::text || ' ' || (v_last + v_count)::text);
    first_seq := v_last + 1;
    RETURN NEXT;
END
$$;
