-- The evidence store: every signed or encrypted artefact that justified a
-- ledger transfer (bills, settlement information, completions, receipts,
-- device transaction data, ...), addressed by the SHA-256 of its exact
-- bytes. Ledger transfers link to these digests; the auditor checks that
-- each linked digest is here and matches its bytes.
CREATE TABLE evidence (
    digest        BLOB PRIMARY KEY,
    -- artefact type, e.g. kessai-bill
    kind          TEXT NOT NULL,
    -- what it belongs to, e.g. bill:<digest>, txn:<id>
    subject       TEXT NOT NULL,
    -- key ref that signed it ('' for unsigned / encrypted-only)
    signer        TEXT NOT NULL,
    -- JSON array of the hex digests of the artefacts it binds
    binds         TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- retention: purge after this instant (NULL: keep)
    purge_after_ms BIGINT,
    -- set when retention purged the bytes (the row stays as a tombstone so
    -- the auditor can tell purged from missing)
    purged_at_ms  BIGINT
);
CREATE INDEX evidence_subject ON evidence (subject);
