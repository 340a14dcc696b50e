-- The attachment event log (append-only) and the snapshots that let start-up skip most of it.
-- Applied by genie/store/migrations.py inside one transaction together with user_version = 1.

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,       -- global order of the log; assigned by the writer
    stream      TEXT    NOT NULL,          -- CNI container ID of the sandbox
    version     INTEGER NOT NULL,          -- 1, 2, 3... within the stream
    kind        TEXT    NOT NULL,          -- event class name (genie/domain/events.py)
    recorded_at REAL    NOT NULL,          -- unix time of the commit
    payload     TEXT    NOT NULL,          -- the event as JSON (genie/domain/codec.py)
    UNIQUE (stream, version)               -- optimistic concurrency safety net; also the stream index
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE snapshots (
    seq          INTEGER PRIMARY KEY,      -- last event seq folded into `state`
    fold_version INTEGER NOT NULL,         -- version of the fold that produced `state`
    created_at   REAL    NOT NULL,
    state        BLOB    NOT NULL          -- NodeState as JSON (genie/domain/codec.py)
);

-- Snapshots are a cache of the fold, but a trusted one: only ever added, never edited.
CREATE TRIGGER snapshots_no_update BEFORE UPDATE ON snapshots
BEGIN
    SELECT RAISE(ABORT, 'snapshots are append-only');
END;

CREATE TRIGGER snapshots_no_delete BEFORE DELETE ON snapshots
BEGIN
    SELECT RAISE(ABORT, 'snapshots are append-only');
END;
