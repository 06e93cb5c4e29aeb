-- Legs and evidence keyed by their transfer's commit sequence number
-- instead of its 16-byte id (see the SQLite migration of the same name):
-- new rows append at the right edge of the primary-key index instead of
-- dirtying a random page per row.

CREATE TABLE ledger_legs_by_seq (
    transfer_seq BIGINT NOT NULL REFERENCES ledger_transfers (seq),
    leg_index    BIGINT NOT NULL,
    account_id   TEXT   NOT NULL REFERENCES ledger_accounts (id),
    side         BIGINT NOT NULL CHECK (side IN (0, 1)),  -- 0 debit 1 credit
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (transfer_seq, leg_index)
);
INSERT INTO ledger_legs_by_seq (transfer_seq, leg_index, account_id, side, amount_minor)
    SELECT t.seq, l.leg_index, l.account_id, l.side, l.amount_minor
    FROM ledger_legs l JOIN ledger_transfers t ON t.id = l.transfer_id;
DROP TABLE ledger_legs;
ALTER TABLE ledger_legs_by_seq RENAME TO ledger_legs;
ALTER INDEX ledger_legs_by_seq_pkey RENAME TO ledger_legs_pkey;
CREATE INDEX ledger_legs_by_account ON ledger_legs (account_id, transfer_seq);
CREATE TRIGGER ledger_legs_append_only BEFORE UPDATE OR DELETE ON ledger_legs
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE TABLE ledger_evidence_by_seq (
    transfer_seq BIGINT NOT NULL REFERENCES ledger_transfers (seq),
    ev_index     BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    digest       BYTEA  NOT NULL CHECK (length(digest) = 32),
    PRIMARY KEY (transfer_seq, ev_index)
);
INSERT INTO ledger_evidence_by_seq (transfer_seq, ev_index, kind, digest)
    SELECT t.seq, e.ev_index, e.kind, e.digest
    FROM ledger_evidence e JOIN ledger_transfers t ON t.id = e.transfer_id;
DROP TABLE ledger_evidence;
ALTER TABLE ledger_evidence_by_seq RENAME TO ledger_evidence;
ALTER INDEX ledger_evidence_by_seq_pkey RENAME TO ledger_evidence_pkey;
CREATE TRIGGER ledger_evidence_append_only BEFORE UPDATE OR DELETE ON ledger_evidence
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
