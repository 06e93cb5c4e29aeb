-- Shared persistence of the payment flows, all enforced by the database so
-- that several host processes agree (no process memory):
--
-- flow_sessions: the serialized state of one in-progress protocol run (a
--   card session, a phone transaction, ...), updated with optimistic
--   concurrency (version) so two processes cannot both advance it.
CREATE TABLE flow_sessions (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    state         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX flow_sessions_expiry ON flow_sessions (expires_at_ms);

-- attempt_counters: failures of a secret check (PIN, enrolment code,
--   password guesses per terminal) with lockout; survives restarts.
CREATE TABLE attempt_counters (
    subject      TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    locked       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- once_markers: single-use things (artefact digests, nonces, passwords):
--   the primary key makes a second use fail, across processes.
CREATE TABLE once_markers (
    scope         TEXT NOT NULL,
    marker        BLOB NOT NULL,
    used_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (scope, marker)
);

-- monotonic_counters: strictly increasing counters of devices and cards
--   (replay protection): only an UPDATE to a larger value succeeds.
CREATE TABLE monotonic_counters (
    subject       TEXT PRIMARY KEY,
    value         BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
