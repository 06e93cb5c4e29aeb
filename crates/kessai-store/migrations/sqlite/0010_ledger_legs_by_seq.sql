-- Legs and evidence keyed by their transfer's commit sequence number
-- instead of its 16-byte id.
--
-- Transfer ids are hashes of natural keys, so keying the two largest tables
-- by them scattered every group commit over hundreds of B-tree pages, each
-- written to the WAL in full: about 10 KiB of WAL per two-leg posting. Keyed
-- by `seq`, new rows append at the right edge of the tree. The transfer's id
-- stays unique in `ledger_transfers`; a leg finds it through `seq`.
--
-- The per-account index on legs is replaced by `ledger_account_history`,
-- which the ledger writer fills in chunks (every few thousand transfers, in
-- the same transaction as a batch) rather than per posting: an index entry
-- per leg dirtied one page per distinct account in every group commit.
-- `ledger_history_mark.upto` is the highest transfer sequence number whose
-- legs are in the history; a history query reads the history up to it and
-- the (short) tail of `ledger_legs` after it, in one statement.

CREATE TABLE ledger_legs_by_seq (
    transfer_seq INTEGER NOT NULL REFERENCES ledger_transfers (seq),
    leg_index    INTEGER NOT NULL,
    account_id   TEXT    NOT NULL REFERENCES ledger_accounts (id),
    side         INTEGER NOT NULL CHECK (side IN (0, 1)),  -- 0 debit 1 credit
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (transfer_seq, leg_index)
) STRICT, WITHOUT ROWID;
INSERT INTO ledger_legs_by_seq (transfer_seq, leg_index, account_id, side, amount_minor)
    SELECT t.seq, l.leg_index, l.account_id, l.side, l.amount_minor
    FROM ledger_legs l JOIN ledger_transfers t ON t.id = l.transfer_id;
DROP TRIGGER ledger_legs_no_update;
DROP TRIGGER ledger_legs_no_delete;
DROP TABLE ledger_legs;
ALTER TABLE ledger_legs_by_seq RENAME TO ledger_legs;
CREATE TRIGGER ledger_legs_no_update BEFORE UPDATE ON ledger_legs
BEGIN SELECT RAISE(ABORT, 'ledger_legs is append-only'); END;
CREATE TRIGGER ledger_legs_no_delete BEFORE DELETE ON ledger_legs
BEGIN SELECT RAISE(ABORT, 'ledger_legs is append-only'); END;

CREATE TABLE ledger_evidence_by_seq (
    transfer_seq INTEGER NOT NULL REFERENCES ledger_transfers (seq),
    ev_index     INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    digest       BLOB    NOT NULL CHECK (length(digest) = 32),
    PRIMARY KEY (transfer_seq, ev_index)
) STRICT, WITHOUT ROWID;
INSERT INTO ledger_evidence_by_seq (transfer_seq, ev_index, kind, digest)
    SELECT t.seq, e.ev_index, e.kind, e.digest
    FROM ledger_evidence e JOIN ledger_transfers t ON t.id = e.transfer_id;
DROP TRIGGER ledger_evidence_no_update;
DROP TRIGGER ledger_evidence_no_delete;
DROP TABLE ledger_evidence;
ALTER TABLE ledger_evidence_by_seq RENAME TO ledger_evidence;
CREATE TRIGGER ledger_evidence_no_update BEFORE UPDATE ON ledger_evidence
BEGIN SELECT RAISE(ABORT, 'ledger_evidence is append-only'); END;
CREATE TRIGGER ledger_evidence_no_delete BEFORE DELETE ON ledger_evidence
BEGIN SELECT RAISE(ABORT, 'ledger_evidence is append-only'); END;

-- (account, transfer) pairs for every leg of every transfer up to the mark.
CREATE TABLE ledger_account_history (
    account_id   TEXT    NOT NULL,
    transfer_seq INTEGER NOT NULL,
    PRIMARY KEY (account_id, transfer_seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE ledger_history_mark (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL CHECK (upto >= 0)
) STRICT;
INSERT INTO ledger_account_history (account_id, transfer_seq)
    SELECT DISTINCT account_id, transfer_seq FROM ledger_legs;
INSERT INTO ledger_history_mark (id, upto)
    SELECT 1, coalesce(max(seq), 0) FROM ledger_transfers;
