-- Flow A (fingerprint device): what the issuer host keeps per customer and
-- device. No card number in clear: the PAN is sealed (AES-256-GCM) under a
-- key derived from the issuer card master key version named in the row;
-- enrolment codes are stored as keyed hashes only.

-- flow_a_cards: the card information the issuer hands to a cardholder's
--   devices (sealed under the storage key for each device).
CREATE TABLE flow_a_cards (
    cardholder_id   TEXT PRIMARY KEY,
    funding_account TEXT NOT NULL,
    masked_pan      TEXT NOT NULL,
    pan_sealed      BLOB NOT NULL,
    seal_key_ref    TEXT NOT NULL,
    expiry_year     BIGINT NOT NULL,
    expiry_month    BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);

-- flow_a_codes: the current one-time enrolment code of a cardholder, as a
--   JSON record holding the keyed hash (never the code), tries left, expiry
--   and use; updated only on the version read (compare-and-set).
CREATE TABLE flow_a_codes (
    cardholder_id TEXT PRIMARY KEY,
    record        TEXT NOT NULL,
    code_key_ref  TEXT NOT NULL,
    version       BIGINT NOT NULL,
    issued_at_ms  BIGINT NOT NULL
);

-- flow_a_devices: registered devices (JSON record: personal public key,
--   key refs, digests); last_counter is the replay barrier and only moves
--   up, on the version read.
CREATE TABLE flow_a_devices (
    device_id     TEXT PRIMARY KEY,
    cardholder_id TEXT NOT NULL,
    record        TEXT NOT NULL,
    last_counter  BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX flow_a_devices_cardholder ON flow_a_devices (cardholder_id);

-- flow_a_key_updates: the key update sent to a device and not yet
--   confirmed (the exact signed bytes, so a refetch returns the same).
CREATE TABLE flow_a_key_updates (
    device_id    TEXT PRIMARY KEY,
    pending      TEXT NOT NULL,
    key_update   BLOB NOT NULL,
    issued_at_ms BIGINT NOT NULL
);
