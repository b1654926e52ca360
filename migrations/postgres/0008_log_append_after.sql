-- The append of the shared log (src/log/postgres_store.rs), as `wk_log_append` (0006) did it,
-- made cheaper per batch and answering what its node has not seen. A batch's cost in the
-- database was mostly per statement rather than per event; with three nodes a batch holds a few
-- events only, so that cost is most of the work. What changed:
--
-- - The answer holds the events of other writers between the node's last known seq
--   (`p_after`) and its batch. Without them the node read the log once more before it could
--   publish its own batch (its batch must follow every earlier event): a second statement and
--   round trip for nearly every batch once several nodes append. They are read by a statement
--   of its own after the insert, so with a snapshot taken after the append lock was granted: it
--   sees every batch before this one (all committed before the lock was). At most
--   `p_gap_limit` events are answered, the first ones after `p_after`; the caller reads the
--   rest. A batch found recorded (a retry) answers its gap the same way. `p_after` NULL: none.
-- - The lookup by batch id runs on a retry only (`p_retry`): a first try cannot find its batch
--   (the id is its first event's, new), and the primary key of `log_batches` would refuse a
--   second copy anyway, failing the statement, recording nothing.
-- - The guards' query runs only when there are guards.
-- - The uid index rows are deduplicated in the query instead of by ON CONFLICT: their seqs are
--   new (the log keeps its last event when archived, so no index row follows it), so the only
--   duplicates are an event naming a uid twice, and ON CONFLICT cost a probe of the index per
--   row.
-- - Generic plans (`plan_cache_mode`): the array parameters made PostgreSQL plan each statement
--   anew at every call, rather than reuse a plan.
--
-- `wk_log_append` stays, for nodes of the build before during an upgrade: it now calls this
-- one, as a first try or a retry alike (it cannot tell), so it always looks its batch up.
CREATE FUNCTION wk_log_append_after(
    p_batch_id    uuid,
    p_bodies      bytea[],
    p_uids        text[],
    p_uid_events  int4[],   -- for each of p_uids, the 1-based position of its event in p_bodies
    p_guard_uids  text[],
    p_guard_after int8[],   -- for each of p_guard_uids, the seq after which it must have no event
    p_writer_id   int8,     -- the appending store, named in the doorbell so that it can ignore its own
    p_retry       boolean,  -- whether an earlier try of this batch may have been recorded
    p_after       int8,     -- the last seq the appending node has seen
    p_gap_limit   int4      -- the most events between it and the batch to answer
) RETURNS TABLE (first_seq int8, conflict_uids text[], gap_seqs int8[], gap_bodies bytea[])
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_last  int8;
    v_count int8 := coalesce(cardinality(p_bodies), 0);
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wk_log_append_after needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    IF v_count = 0 THEN
        RAISE EXCEPTION 'wk_log_append_after: an empty batch';
    END IF;
    PERFORM pg_advisory_xact_lock(512903376743); -- APPEND_LOCK, "wklog"

    IF p_retry THEN
        SELECT b.first_seq INTO first_seq FROM log_batches b WHERE b.batch_id = p_batch_id;
    END IF;
    IF first_seq IS NULL THEN
        IF coalesce(cardinality(p_guard_uids), 0) > 0 THEN
            SELECT array_agg(DISTINCT g.uid) INTO conflict_uids
              FROM unnest(p_guard_uids, p_guard_after) AS g(uid, after)
             WHERE EXISTS (SELECT 1 FROM log_uids l WHERE l.uid = g.uid AND l.seq > g.after);
            IF conflict_uids IS NOT NULL THEN
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;

        SELECT coalesce(max(e.seq), 0) INTO v_last FROM log_events e;
        INSERT INTO log_events (seq, body)
            SELECT v_last + t.i, t.body FROM unnest(p_bodies) WITH ORDINALITY AS t(body, i);
        -- An event that names a uid twice is indexed under it once, as sled's keys do.
        INSERT INTO log_uids (uid, seq)
            SELECT DISTINCT t.uid, v_last + t.i FROM unnest(p_uids, p_uid_events) AS t(uid, i);
        INSERT INTO log_batches (batch_id, first_seq, last_seq)
            VALUES (p_batch_id, v_last + 1, v_last + v_count);
        PERFORM pg_notify('wk_log', p_writer_id::text || ' ' || (v_last + v_count)::text);
        first_seq := v_last + 1;
    END IF;

    IF p_after IS NOT NULL AND p_after + 1 < first_seq THEN
        SELECT array_agg(g.seq ORDER BY g.seq), array_agg(g.body ORDER BY g.seq)
          INTO gap_seqs, gap_bodies
          FROM (SELECT e.seq, e.body FROM log_events e
                 WHERE e.seq > p_after AND e.seq < first_seq
                 ORDER BY e.seq LIMIT p_gap_limit) AS g;
    END IF;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION wk_log_append(
    p_batch_id    uuid,
    p_bodies      bytea[],
    p_uids        text[],
    p_uid_events  int4[],
    p_guard_uids  text[],
    p_guard_after int8[],
    p_writer_id   int8
) RETURNS TABLE (first_seq int8, conflict_uids text[])
LANGUAGE sql VOLATILE AS $$
    SELECT a.first_seq, a.conflict_uids
      FROM wk_log_append_after(p_batch_id, p_bodies, p_uids, p_uid_events, p_guard_uids,
                               p_guard_after, p_writer_id, true, NULL, 0) AS a;
$$;
