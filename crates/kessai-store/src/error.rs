//! The store's error type.

/// Why a store operation failed.
///
/// Business refusals of a ledger transfer (unbalanced, over limit, ...) are
/// not errors of the store: they come back as
/// [`kessai_ledger::LedgerError`] inside a successful call (see
/// [`crate::Ledger::submit`]). `StoreError` is for the infrastructure:
/// the URL, the file system, the database, a corrupt row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL or path is not one `Db::open` understands.
    #[error("invalid database location: {0}")]
    InvalidUrl(String),
    /// The data directory could not be created.
    #[error("cannot create data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database refused or failed an operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite ledger writer's own connection refused or failed an
    /// operation.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying the schema migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded into a domain value (an id that
    /// does not validate, an unknown enum code, a digest of the wrong
    /// length). The auditor reports such rows; other calls refuse them.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What was wrong (no secrets: ids and codes only).
        detail: String,
    },
    /// A ledger batch kept conflicting with other writers and was given up
    /// (the outcome is unknown: retrying the same request is safe).
    #[error("too much contention; retry")]
    Contention,
    /// The ledger writer task is gone (the runtime is shutting down).
    #[error("ledger writer stopped")]
    WriterStopped,

    /// The ledger writer could not get a database connection (the batch
    /// was not attempted; nothing changed).
    #[error("ledger writer has no database connection: {0}")]
    WriterConnection(String),
}

impl StoreError {
    /// A corrupt-row error.
    pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            table,
            detail: detail.into(),
        }
    }
}
