-- Flow D (temporary password at the POS, seed 003): host challenges, the
-- flow-D card records (customer and merchant IC cards), POS terminals,
-- temporary passwords and the receipt queue (phone push / POS signal).
--
-- No card number, PIN, PIN block or password digits are stored: cards keep a
-- keyed PAN digest and the masked PAN inside `profile` (JSON of the pure
-- crate's CustomerPart without the mutable try counter), passwords are
-- keyed hashes. Every mutable field the protocol guards is a column so the
-- guarding UPDATE is one conditional statement.

CREATE TABLE flowd_challenges (
    challenge     BYTEA PRIMARY KEY,
    expires_at_ms BIGINT NOT NULL,
    consumed      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE flowd_cards (
    card_id        TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('customer', 'merchant')),
    currency       TEXT NOT NULL,
    last_counter   BIGINT NOT NULL DEFAULT 0,
    blocked        BIGINT NOT NULL DEFAULT 0,
    cvm_tries_left BIGINT NOT NULL DEFAULT 0,
    -- keyed PAN digest (customer cards), unique: one record per card number
    pan_digest     BYTEA UNIQUE,
    -- customer: JSON CustomerPart (digests, masked PAN, expiry, PIN
    -- verification data); merchant: NULL
    profile        TEXT,
    -- merchant cards: the store they belong to
    store_id       TEXT UNIQUE,
    created_at_ms  BIGINT NOT NULL
);

CREATE TABLE flowd_terminals (
    terminal_id           TEXT PRIMARY KEY,
    store_id              TEXT NOT NULL,
    guess_failures        BIGINT NOT NULL DEFAULT 0,
    guess_window_start_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms         BIGINT NOT NULL
);

CREATE TABLE flowd_passwords (
    -- keyed hash of the digits
    id            BYTEA PRIMARY KEY,
    card_id       TEXT NOT NULL,
    -- JSON PasswordRecord as issued (state Unused)
    record        TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used          BIGINT NOT NULL DEFAULT 0,
    used_at_ms    BIGINT,
    transfer_id   TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX flowd_passwords_expiry ON flowd_passwords (expires_at_ms);

-- Signed receipts for the phone (recipient `card:<id>`) and the POS
-- (`terminal:<id>` / `store:<id>`); one row per (recipient, transfer).
CREATE TABLE flowd_receipts (
    seq           BIGSERIAL PRIMARY KEY,
    recipient     TEXT NOT NULL,
    transfer_id   TEXT NOT NULL,
    receipt       BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (recipient, transfer_id)
);
