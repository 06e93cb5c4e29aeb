-- Flow C (card reader plugged into the phone, seed 002): the phone and
-- card tables of the issuer, the per-transaction key pairs (sealed), and
-- the message queue the host pushes to phones and merchants.
--
-- No card number, PIN or PIN block is ever stored in clear: a card is found
-- by a keyed hash of its PAN, shown by its masked form, and its PIN is
-- checked against keyed verification data.

-- flowc_phones: customer phone number <-> registered device key <-> cardholder.
CREATE TABLE flowc_phones (
    device_id     TEXT PRIMARY KEY,
    -- E.164, unique: the merchant names the customer by it (S1)
    phone_number  TEXT NOT NULL UNIQUE,
    cardholder_id TEXT NOT NULL,
    key_version   BIGINT NOT NULL CHECK (key_version >= 1),
    -- Ed25519 public key, 32 bytes
    public_key    BYTEA NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at_ms BIGINT NOT NULL
);

-- flowc_cards: the seed's cardholder table 32.
CREATE TABLE flowc_cards (
    card_id          TEXT PRIMARY KEY,
    -- keyed SHA-256 of the PAN under a key derived from the issuer card
    -- master key `index_key_ref`; never the PAN itself
    pan_index        BYTEA NOT NULL UNIQUE,
    index_key_ref    TEXT NOT NULL,
    -- BIN + last four
    masked_pan       TEXT NOT NULL,
    expiry_yymm      TEXT NOT NULL,
    cardholder_id    TEXT NOT NULL,
    funding_account  TEXT NOT NULL,
    -- kessai-pin PinVerificationData (version, salt, HMAC tag) under the PIN
    -- verification key derived from `pvk_ref`
    pin_verification BYTEA NOT NULL,
    pvk_ref          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    created_at_ms    BIGINT NOT NULL
);

-- flowc_txn_keys: the transaction's HPKE key pair (S6), its secret sealed
-- to the issuer's storage key (HPKE, itself sealed under the master key);
-- the row is deleted when the transaction ends (S26).
CREATE TABLE flowc_txn_keys (
    key_ref         TEXT PRIMARY KEY,
    txn_id          TEXT NOT NULL,
    storage_key_ref TEXT NOT NULL,
    enc             BYTEA NOT NULL,
    sealed_secret   BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL
);

-- flowc_messages: signed artefacts waiting for a phone or merchant to
-- collect them (long poll). One row per (recipient, artefact): enqueueing
-- the same artefact twice is a no-op.
CREATE TABLE flowc_messages (
    seq           BIGSERIAL PRIMARY KEY,
    recipient     TEXT NOT NULL,
    txn_id        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    artefact      BYTEA NOT NULL,
    digest        BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (recipient, digest)
);
CREATE INDEX flowc_messages_recipient ON flowc_messages (recipient, seq);
