-- Issuer registry: merchants (stores, malls, member stores) and their
-- signing keys, cardholders, the issuer's own keys (sealed at rest),
-- HTTP idempotency records, and the append-only audit log.

CREATE TABLE merchants (
    id              TEXT PRIMARY KEY,
    -- 'store': a store with its own key; 'mall': signs bills for its
    -- member stores; 'member': a member store of mall_id (no own key).
    kind            TEXT NOT NULL CHECK (kind IN ('store', 'mall', 'member')),
    name            TEXT NOT NULL,
    mall_id         TEXT REFERENCES merchants (id),
    status          TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    currency        TEXT NOT NULL,
    -- ledger account credited with this merchant's sales (NULL for malls)
    payable_account TEXT,
    created_at_ms   BIGINT NOT NULL,
    CHECK ((kind = 'member') = (mall_id IS NOT NULL))
);

CREATE TABLE merchant_keys (
    merchant_id   TEXT NOT NULL REFERENCES merchants (id),
    version       BIGINT NOT NULL CHECK (version >= 1),
    -- Ed25519 public key, 32 bytes
    public_key    BYTEA NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, version)
);
CREATE UNIQUE INDEX merchant_keys_one_active ON merchant_keys (merchant_id) WHERE state = 'active';

CREATE TABLE cardholders (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    funding_account TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE issuer_keys (
    key_id              TEXT NOT NULL,
    version             BIGINT NOT NULL CHECK (version >= 1),
    purpose             TEXT NOT NULL,
    algorithm           TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
    created_at_ms       BIGINT NOT NULL,
    state_changed_at_ms BIGINT NOT NULL,
    public_key          BYTEA NOT NULL,
    -- secret key sealed under the master key (AES-256-GCM envelope,
    -- AAD = key id, version, purpose); never stored in clear
    sealed_secret       BYTEA NOT NULL,
    PRIMARY KEY (key_id, version)
);
CREATE UNIQUE INDEX issuer_keys_one_active ON issuer_keys (key_id) WHERE state = 'active';

CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    -- SHA-256 over method, path and body of the first request
    fingerprint     BYTEA NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    locked_until_ms BIGINT NOT NULL,
    status          BIGINT,
    content_type    TEXT,
    body            BYTEA,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);

CREATE TABLE audit_log (
    seq     BIGSERIAL PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- JSON object; never card numbers, PINs, PIN blocks or keys
    detail  TEXT NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject);
