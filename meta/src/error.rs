//! The metadata store's error: its own type, so that no caller depends on sqlx.

use std::fmt;

/// An error from the metadata store.
///
/// Its message carries the whole story (what was being done, and SQLite's or the decoder's
/// own words), so callers can show it as it is.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite itself failed (I/O, a full disk, a lock held too long, a broken constraint): the
    /// database, not a row in it, is the problem.
    #[error("metadata database: {context}: {cause}")]
    Db {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's error.
        cause: DbError,
    },
    /// A row read from the database does not decode: a value of the wrong type, an id of the
    /// wrong length, a negative size, JSON that does not parse. The database on this machine
    /// is damaged (the other replicas hold their own copy).
    #[error("metadata corrupt: {what}: {detail}")]
    Corrupt {
        /// The table and column, and the row's key where it is known.
        what: String,
        /// What is wrong with the value.
        detail: String,
    },
    /// A value could not be encoded for the database (the encoded types are plain data, so
    /// this is not expected).
    #[error("metadata encode: {what}: {detail}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The encoder's error.
        detail: String,
    },
}

impl MetaError {
    /// A [`MetaError::Corrupt`].
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// Whether a row on disk did not decode (as opposed to the database failing).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. })
    }
}

/// SQLite's own error, opaque: callers see its message, never sqlx's type.
pub struct DbError(sqlx::Error);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Names what the store was doing when sqlx failed: `query.await.db("read entries")?`.
pub(crate) trait DbContext<T> {
    /// The error as a [`MetaError::Db`] with `context`.
    fn db(self, context: &'static str) -> Result<T, MetaError>;
}

impl<T> DbContext<T> for Result<T, sqlx::Error> {
    fn db(self, context: &'static str) -> Result<T, MetaError> {
        self.map_err(|e| db_error(context, e))
    }
}

/// `e` as a [`MetaError::Db`] with `context`.
pub(crate) fn db_error(context: &'static str, e: sqlx::Error) -> MetaError {
    MetaError::Db {
        context,
        cause: DbError(e),
    }
}

/// A result of the store.
pub(crate) type Res<T> = Result<T, MetaError>;
