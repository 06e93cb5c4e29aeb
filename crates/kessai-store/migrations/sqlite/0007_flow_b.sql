-- Flow B (IC-card e-money, seeds 001/004). The card sessions themselves are
-- flow_sessions rows (flow = 'b'); these tables hold what must be unique or
-- durable across host processes.

-- One row per bill key (store + order number). The primary key and the
-- status transitions (open -> reserved -> settled, reserved -> open on a
-- void) make a bill settle exactly once, whichever process asks.
CREATE TABLE flowb_bills (
    store_id      TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'reserved', 'settled')),
    mall_id       TEXT,
    bill_digest   BLOB NOT NULL,
    hold_id       BLOB,
    transfer_id   BLOB,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (store_id, order_id)
);

-- The card operation sent under a ledger hold whose outcome the host has
-- not seen yet (at most one per card; JSON of the flow's PendingCardOp).
CREATE TABLE flowb_pending_ops (
    card_id       TEXT PRIMARY KEY,
    hold_id       BLOB NOT NULL UNIQUE,
    op            TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Transactional outbox of ledger requests: written in the same database
-- transaction as the step that decided them, submitted (idempotently, by
-- transfer id) right after, and by any later request if a process died.
CREATE TABLE flowb_outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id   BLOB NOT NULL,
    request       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Signed completions (SIG3) for stores to collect, including completions
-- reached by recovery after a lost PCN.
CREATE TABLE flowb_completions (
    store_id      TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    mall_id       TEXT,
    card_id       TEXT NOT NULL,
    completion    BLOB NOT NULL,
    digest        BLOB NOT NULL,
    recovered     BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (store_id, order_id)
);

-- Verified store receipts (SIG4).
CREATE TABLE flowb_receipts (
    store_id          TEXT NOT NULL,
    order_id          TEXT NOT NULL,
    completion_digest BLOB NOT NULL,
    receipt_digest    BLOB NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (store_id, order_id, receipt_digest)
);

-- Card history uploaded to the host's information-management store.
CREATE TABLE flowb_card_log (
    card_id        TEXT NOT NULL,
    counter        BIGINT NOT NULL,
    entry          TEXT NOT NULL,
    uploaded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (card_id, counter)
);

-- Funding (credit) cards of cardholders for top-ups: a keyed hash of the
-- card number and its masked form, never the number, the PIN or a PIN
-- block; keyed PIN verification data under a key derived from the issuer
-- card master key version named in key_ref.
CREATE TABLE flowb_funding_cards (
    account_id    TEXT PRIMARY KEY,
    cardholder_id TEXT NOT NULL,
    pan_index     BLOB NOT NULL UNIQUE,
    pan_masked    TEXT NOT NULL,
    expiry_yymm   TEXT NOT NULL,
    pin_data      BLOB NOT NULL,
    key_ref       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
