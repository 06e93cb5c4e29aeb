-- IC cards issued by this host (flows B and D): which issuer card master key
-- version their SCP03 keys are diversified from, the purse parameters, and
-- the host's shadow of the card's balance and counter (last verified).
CREATE TABLE cards (
    card_id             TEXT PRIMARY KEY,
    master_key_ref      TEXT NOT NULL,
    key_version         INTEGER NOT NULL CHECK (key_version BETWEEN 1 AND 127),
    currency            TEXT NOT NULL,
    purse_max_minor     BIGINT NOT NULL CHECK (purse_max_minor > 0),
    emoney_account      TEXT NOT NULL,
    cardholder_id       TEXT,
    status              TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    shadow_balance_minor BIGINT NOT NULL CHECK (shadow_balance_minor >= 0),
    shadow_counter      BIGINT NOT NULL CHECK (shadow_counter >= 0),
    created_at_ms       BIGINT NOT NULL
);
