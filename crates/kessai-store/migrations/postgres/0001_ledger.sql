-- kessai ledger, PostgreSQL. Amounts are BIGINT minor units, transfer ids
-- are 16-byte BYTEA, times are caller-supplied unix milliseconds.

CREATE TABLE ledger_accounts (
    id              TEXT     PRIMARY KEY,
    kind            BIGINT   NOT NULL,            -- kessai_ledger::AccountKind::code
    currency        BIGINT   NOT NULL,            -- ISO 4217 numeric
    limit_kind      BIGINT   NOT NULL,            -- 0 unlimited, 1 max net debit, 2 max net credit
    limit_minor     BIGINT   NOT NULL CHECK (limit_minor >= 0),
    debits_pending  BIGINT   NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   BIGINT   NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending BIGINT   NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  BIGINT   NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at_ms   BIGINT   NOT NULL
);

-- Append-only. `seq` is the commit order; `id` the natural-key id.
-- A resolution (post/void/expire) names its pending transfer in
-- `pending_id`; a unique index on it allows at most one resolution.
CREATE TABLE ledger_transfers (
    seq           BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            BYTEA    NOT NULL UNIQUE CHECK (length(id) = 16),
    kind          BIGINT   NOT NULL CHECK (kind BETWEEN 0 AND 4), -- 0 posted 1 pending 2 post 3 void 4 expire
    currency      BIGINT   NOT NULL,
    code          BIGINT   NOT NULL,
    expires_at_ms BIGINT,
    pending_id    BYTEA           REFERENCES ledger_transfers (id),
    reference     TEXT     NOT NULL,
    digest        BYTEA    NOT NULL CHECK (length(digest) = 32),
    created_at_ms BIGINT   NOT NULL,
    CHECK ((kind IN (2, 3, 4)) = (pending_id IS NOT NULL)),
    CHECK ((kind = 1) = (expires_at_ms IS NOT NULL))
);

-- At most one resolution per pending (partial: posted transfers, the
-- vast majority, have no pending_id and no entry).
CREATE UNIQUE INDEX ledger_transfers_one_resolution ON ledger_transfers (pending_id)
    WHERE pending_id IS NOT NULL;

-- Finds holds due for expiry.
CREATE INDEX ledger_transfers_pending_expiry ON ledger_transfers (expires_at_ms) WHERE kind = 1;

-- The legs of every transfer; a resolution repeats its pending's legs.
CREATE TABLE ledger_legs (
    transfer_id  BYTEA    NOT NULL REFERENCES ledger_transfers (id),
    leg_index    BIGINT   NOT NULL,
    account_id   TEXT     NOT NULL REFERENCES ledger_accounts (id),
    side         BIGINT   NOT NULL CHECK (side IN (0, 1)),  -- 0 debit 1 credit
    amount_minor BIGINT   NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (transfer_id, leg_index)
);
CREATE INDEX ledger_legs_by_account ON ledger_legs (account_id, transfer_id);

-- Digests of the signed evidence that justified each transfer.
CREATE TABLE ledger_evidence (
    transfer_id BYTEA   NOT NULL REFERENCES ledger_transfers (id),
    ev_index    BIGINT   NOT NULL,
    kind        TEXT    NOT NULL,
    digest      BYTEA   NOT NULL CHECK (length(digest) = 32),
    PRIMARY KEY (transfer_id, ev_index)
);

-- Append-only, enforced by the database (the auditor still checks).
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_legs_append_only BEFORE UPDATE OR DELETE ON ledger_legs
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_evidence_append_only BEFORE UPDATE OR DELETE ON ledger_evidence
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
