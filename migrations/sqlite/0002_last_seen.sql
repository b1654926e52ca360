-- Last seen (protocol.md section 8): when each (uid, device_flag) last had a session end, the
-- Disconnected with the highest seq of that uid and flag. Derived from the log like every
-- table here: memory answers /user/lastseen from it after a restart without reading every
-- session ever recorded.
CREATE TABLE last_seen (
    uid         TEXT NOT NULL,
    device_flag INTEGER NOT NULL,
    seen_seq    INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL,
    PRIMARY KEY (uid, device_flag)
);

-- A view projected before this table: filled from the sessions it holds (SQLite takes the
-- bare disconnected_at from the row of the group's MAX).
INSERT INTO last_seen (uid, device_flag, seen_seq, seen_at)
SELECT uid, device_flag, MAX(disconnected_seq), disconnected_at
FROM device_sessions WHERE disconnected_seq IS NOT NULL
GROUP BY uid, device_flag;
