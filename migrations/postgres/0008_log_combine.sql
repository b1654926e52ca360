-- Appends of several nodes combined into one commit (src/log/postgres_store.rs). Until now each
-- batch committed in turn under the append lock, held through its commit's WAL flush (0006): the
-- nodes' commits could not share a flush, and three nodes appended less than one. Now a batch
-- that finds the lock taken is staged instead, and whoever holds the lock next numbers every
-- staged batch whose writer waits for it, in one transaction and one flush.
--
-- An append is `wk_log_append_or_stage` (one statement, in its own implicit transaction):
-- - the batch already recorded (a retry after a lost answer): its first seq;
-- - the lock free (`pg_try_advisory_xact_lock`): the waiting writers' staged batches, then this
--   one, are numbered and inserted; the statement's commit makes them durable together;
-- - the lock taken: the batch is written to `log_staged` and the statement answers `staged`.
--   That transaction wrote only an UNLOGGED table, so it commits without waiting for a WAL
--   flush. The writer then calls `wk_log_append_staged`: it takes the batch's waiter key (a
--   transaction-level advisory lock that says "my writer waits for me"), waits for the append
--   lock, and finds its batch recorded by another writer's transaction (or rejected, in
--   `log_rejected`), or numbers it and every other waiting batch itself.
--
-- Promises kept from 0006: seqs are dense and commit in seq order (every numbering holds the
-- append lock through its commit); a batch is looked up by its id under the lock before it is
-- numbered, so a retried batch is recorded once; guards are checked at numbering time, each
-- batch against everything numbered before it, the batches earlier in the same transaction
-- included; a batch whose guards break records nothing and its writer is told which uids broke.
--
-- A staged batch is numbered only while its writer waits for it inside `wk_log_append_staged`
-- (its waiter key is held: `pg_try_advisory_xact_lock_shared` fails). A writer killed after
-- staging never reaches that call, so its batch is never numbered: a dead node's Connected
-- cannot be recorded after its peers closed its sessions as node_lost. A writer waiting in the
-- call is in the position of a writer waiting in 0006's function, whose statement the server
-- ran whether its client lived or not. Staged batches nobody waits for are dropped after a
-- minute; a writer that comes back for one later is told it is gone, and its batch failed.
--
-- A crash of PostgreSQL empties both UNLOGGED tables. Nothing in them was acknowledged: a writer
-- whose answer was lost tries again with the same batch id, which is looked up first.
--
-- The doorbell rings once per batch, `<its writer id> <its last seq>`, so that a node ignores
-- its own batches only, also when another node's transaction numbered them.

CREATE UNLOGGED TABLE log_staged (
    batch_id    uuid    PRIMARY KEY,
    writer_id   int8    NOT NULL,
    waiter_key  int8    NOT NULL,
    bodies      bytea[] NOT NULL,
    uids        text[]  NOT NULL,
    uid_events  int4[]  NOT NULL,
    guard_uids  text[]  NOT NULL,
    guard_after int8[]  NOT NULL,
    staged_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Out of line without compression: the bodies are compressed by nobody when staged and
-- decompressed by nobody under the lock.
ALTER TABLE log_staged ALTER COLUMN bodies SET STORAGE EXTERNAL;

-- Batches another writer's transaction found in conflict, until their writer reads why.
CREATE UNLOGGED TABLE log_rejected (
    batch_id      uuid   PRIMARY KEY,
    conflict_uids text[] NOT NULL,
    rejected_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The advisory key a writer holds while it waits for its staged batch: the batch id's random
-- half.
CREATE FUNCTION wk_log_waiter_key(p_batch_id uuid) RETURNS int8
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || right(replace(p_batch_id::text, '-', ''), 16))::bit(64)::int8
$$;

-- Numbers one batch; the caller holds the append lock. 0006's body without the lock.
CREATE FUNCTION wk_log_number(
    p_batch_id    uuid,
    p_writer_id   int8,
    p_bodies      bytea[],
    p_uids        text[],
    p_uid_events  int4[],
    p_guard_uids  text[],
    p_guard_after int8[]
) RETURNS TABLE (first_seq int8, conflict_uids text[])
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_last  int8;
    v_count int8 := cardinality(p_bodies);
BEGIN
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

-- Numbers every staged batch whose writer waits for it, and `p_own` (the caller's, whose key it
-- holds itself), in batch id order (the ids are UUIDv7: about the order they were stamped);
-- the caller holds the append lock. A rejected batch's uids go to log_rejected. Staged batches
-- nobody waits for stay, and are dropped once a minute old.
CREATE FUNCTION wk_log_number_staged(p_own uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s record;
    v_first     int8;
    v_conflicts text[];
BEGIN
    FOR s IN SELECT * FROM log_staged ORDER BY batch_id LOOP
        -- The shared try succeeds when nobody holds the key: the writer does not wait (it died
        -- after staging, or is not there yet). It then holds the key shared until this commit,
        -- so a writer arriving now waits for this transaction before it looks for its batch.
        -- (Never tried on the caller's own key, which it holds: its own try would succeed.)
        IF s.batch_id IS DISTINCT FROM p_own THEN
            IF pg_try_advisory_xact_lock_shared(s.waiter_key) THEN
                IF s.staged_at < clock_timestamp() - interval '1 minute' THEN
                    DELETE FROM log_staged WHERE batch_id = s.batch_id;
                END IF;
                CONTINUE;
            END IF;
        END IF;
        SELECT n.first_seq, n.conflict_uids INTO v_first, v_conflicts
          FROM wk_log_number(s.batch_id, s.writer_id, s.bodies, s.uids, s.uid_events,
                             s.guard_uids, s.guard_after) AS n;
        IF v_first IS NULL THEN
            INSERT INTO log_rejected (batch_id, conflict_uids) VALUES (s.batch_id, v_conflicts)
            ON CONFLICT (batch_id) DO UPDATE
                SET conflict_uids = EXCLUDED.conflict_uids, rejected_at = EXCLUDED.rejected_at;
        END IF;
        DELETE FROM log_staged WHERE batch_id = s.batch_id;
    END LOOP;
END
$$;

-- An append (see the top of this file). Called as a statement of its own outside any
-- transaction block, under READ COMMITTED (each statement after the lock must see every batch
-- committed before it was granted). Returns the batch's first seq; or every uid whose guard
-- does not hold (nothing recorded); or `staged`: call wk_log_append_staged next.
CREATE FUNCTION wk_log_append_or_stage(
    p_batch_id    uuid,
    p_bodies      bytea[],
    p_uids        text[],
    p_uid_events  int4[],   -- for each of p_uids, the 1-based position of its event in p_bodies
    p_guard_uids  text[],
    p_guard_after int8[],   -- for each of p_guard_uids, the seq after which it must have no event
    p_writer_id   int8      -- the appending store, named in the doorbell
) RETURNS TABLE (first_seq int8, conflict_uids text[], staged boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_count int8 := coalesce(cardinality(p_bodies), 0);
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wk_log_append_or_stage needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    -- Checked here, before anything is staged: a batch that would fail to insert must never
    -- wait in log_staged, where it would fail the transaction of whoever numbers it.
    IF v_count = 0 THEN
        RAISE EXCEPTION 'wk_log_append_or_stage: an empty batch';
    END IF;
    IF array_position(p_bodies, NULL) IS NOT NULL
       OR coalesce(cardinality(p_uids), 0) <> coalesce(cardinality(p_uid_events), 0)
       OR coalesce(cardinality(p_guard_uids), 0) <> coalesce(cardinality(p_guard_after), 0)
       OR EXISTS (SELECT 1 FROM unnest(p_uid_events) AS i WHERE i IS NULL OR i < 1 OR i > v_count)
       OR array_position(p_uids, NULL) IS NOT NULL
       OR array_position(p_guard_uids, NULL) IS NOT NULL
       OR array_position(p_guard_after, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'wk_log_append_or_stage: a malformed batch';
    END IF;

    staged := false;
    -- A retry whose batch another transaction recorded: no lock needed to know it.
    SELECT b.first_seq INTO first_seq FROM log_batches b WHERE b.batch_id = p_batch_id;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;

    IF NOT pg_try_advisory_xact_lock(512903376743) THEN -- APPEND_LOCK, "wklog"
        INSERT INTO log_staged (batch_id, writer_id, waiter_key, bodies, uids, uid_events,
                                guard_uids, guard_after)
        VALUES (p_batch_id, p_writer_id, wk_log_waiter_key(p_batch_id), p_bodies,
                coalesce(p_uids, '{}'), coalesce(p_uid_events, '{}'),
                coalesce(p_guard_uids, '{}'), coalesce(p_guard_after, '{}'))
        ON CONFLICT (batch_id) DO NOTHING; -- staged by an earlier try: the same batch
        staged := true;
        RETURN NEXT;
        RETURN;
    END IF;

    -- A copy an earlier try staged: this try numbers the batch itself.
    IF EXISTS (SELECT 1 FROM log_staged) THEN
        DELETE FROM log_staged s WHERE s.batch_id = p_batch_id;
        PERFORM wk_log_number_staged(NULL);
    END IF;
    SELECT n.first_seq, n.conflict_uids INTO first_seq, conflict_uids
      FROM wk_log_number(p_batch_id, p_writer_id, p_bodies, p_uids, p_uid_events,
                         p_guard_uids, p_guard_after) AS n;
    RETURN NEXT;
END
$$;

-- The second half of an append that was staged: waits for the append lock as the batch's
-- waiter, then answers what became of the batch (numbering it, and every other waiting batch,
-- if nobody did). Raises `WKGON` when the batch is neither recorded, rejected nor staged (it
-- waited unclaimed past a minute): nothing of it is in the log, nor ever will be.
CREATE FUNCTION wk_log_append_staged(p_batch_id uuid)
RETURNS TABLE (first_seq int8, conflict_uids text[])
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'wk_log_append_staged needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM pg_advisory_xact_lock(wk_log_waiter_key(p_batch_id));
    PERFORM pg_advisory_xact_lock(512903376743); -- APPEND_LOCK, "wklog"

    IF NOT EXISTS (SELECT 1 FROM log_batches b WHERE b.batch_id = p_batch_id)
       AND NOT EXISTS (SELECT 1 FROM log_rejected r WHERE r.batch_id = p_batch_id) THEN
        IF NOT EXISTS (SELECT 1 FROM log_staged s WHERE s.batch_id = p_batch_id) THEN
            RAISE EXCEPTION 'the staged batch % is gone: it was not recorded', p_batch_id
                USING ERRCODE = 'WKGON';
        END IF;
        PERFORM wk_log_number_staged(p_batch_id);
        DELETE FROM log_rejected r WHERE r.rejected_at < clock_timestamp() - interval '1 minute';
    END IF;

    SELECT b.first_seq INTO first_seq FROM log_batches b WHERE b.batch_id = p_batch_id;
    IF FOUND THEN
        -- A copy staged again by a retry of a batch recorded meanwhile.
        DELETE FROM log_staged s WHERE s.batch_id = p_batch_id;
        RETURN NEXT;
        RETURN;
    END IF;
    DELETE FROM log_rejected r WHERE r.batch_id = p_batch_id RETURNING r.conflict_uids
        INTO conflict_uids;
    RETURN NEXT;
END
$$;
