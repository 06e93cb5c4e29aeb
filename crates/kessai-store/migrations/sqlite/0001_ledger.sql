-- kessai ledger, SQLite. Amounts are INTEGER minor units, transfer ids are
-- 16-byte BLOBs, times are caller-supplied unix milliseconds.

CREATE TABLE ledger_accounts (
    id              TEXT    PRIMARY KEY,
    kind            INTEGER NOT NULL,             -- kessai_ledger::AccountKind::code
    currency        INTEGER NOT NULL,             -- ISO 4217 numeric
    limit_kind      INTEGER NOT NULL,             -- 0 unlimited, 1 max net debit, 2 max net credit
    limit_minor     INTEGER NOT NULL CHECK (limit_minor >= 0),
    debits_pending  INTEGER NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   INTEGER NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  INTEGER NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at_ms   INTEGER NOT NULL
) STRICT;

-- Append-only. `seq` is the commit order; `id` the natural-key id.
-- A resolution (post/void/expire) names its pending transfer in
-- `pending_id`; a unique index on it allows at most one resolution.
CREATE TABLE ledger_transfers (
    seq           INTEGER PRIMARY KEY,  -- rowid; rows are never deleted, so never reused
    id            BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
    kind          INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 4), -- 0 posted 1 pending 2 post 3 void 4 expire
    currency      INTEGER NOT NULL,
    code          INTEGER NOT NULL,
    expires_at_ms INTEGER,
    pending_id    BLOB           REFERENCES ledger_transfers (id),
    reference     TEXT    NOT NULL,
    digest        BLOB    NOT NULL CHECK (length(digest) = 32),
    created_at_ms INTEGER NOT NULL,
    CHECK ((kind IN (2, 3, 4)) = (pending_id IS NOT NULL)),
    CHECK ((kind = 1) = (expires_at_ms IS NOT NULL))
) STRICT;

-- At most one resolution per pending (partial: posted transfers, the
-- vast majority, have no pending_id and no entry).
CREATE UNIQUE INDEX ledger_transfers_one_resolution ON ledger_transfers (pending_id)
    WHERE pending_id IS NOT NULL;

-- Finds holds due for expiry.
CREATE INDEX ledger_transfers_pending_expiry ON ledger_transfers (expires_at_ms) WHERE kind = 1;

-- The legs of every transfer; a resolution repeats its pending's legs.
CREATE TABLE ledger_legs (
    transfer_id  BLOB    NOT NULL REFERENCES ledger_transfers (id),
    leg_index    INTEGER NOT NULL,
    account_id   TEXT    NOT NULL REFERENCES ledger_accounts (id),
    side         INTEGER NOT NULL CHECK (side IN (0, 1)),  -- 0 debit 1 credit
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (transfer_id, leg_index)
) STRICT, WITHOUT ROWID;
CREATE INDEX ledger_legs_by_account ON ledger_legs (account_id, transfer_id);

-- Digests of the signed evidence that justified each transfer.
CREATE TABLE ledger_evidence (
    transfer_id BLOB    NOT NULL REFERENCES ledger_transfers (id),
    ev_index    INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    digest      BLOB    NOT NULL CHECK (length(digest) = 32),
    PRIMARY KEY (transfer_id, ev_index)
) STRICT, WITHOUT ROWID;

-- Append-only, enforced by the database (the auditor still checks).
CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger_transfers is append-only'); END;
CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'ledger_transfers is append-only'); END;
CREATE TRIGGER ledger_legs_no_update BEFORE UPDATE ON ledger_legs
BEGIN SELECT RAISE(ABORT, 'ledger_legs is append-only'); END;
CREATE TRIGGER ledger_legs_no_delete BEFORE DELETE ON ledger_legs
BEGIN SELECT RAISE(ABORT, 'ledger_legs is append-only'); END;
CREATE TRIGGER ledger_evidence_no_update BEFORE UPDATE ON ledger_evidence
BEGIN SELECT RAISE(ABORT, 'ledger_evidence is append-only'); END;
CREATE TRIGGER ledger_evidence_no_delete BEFORE DELETE ON ledger_evidence
BEGIN SELECT RAISE(ABORT, 'ledger_evidence is append-only'); END;
