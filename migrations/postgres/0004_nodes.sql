-- The nodes sharing this database and their leases. A node renews its lease every fifth of
-- its length; one whose lease ran out (and that did not stop cleanly) is lost, and a peer
-- closes its sessions as node_lost. Times are the database's clock, never a node's.
CREATE TABLE nodes (
    node_id          bigint PRIMARY KEY,
    boot_id          uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    stopped          boolean NOT NULL DEFAULT false
);
