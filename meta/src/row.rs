//! Reading columns of a row read from the database without ever panicking: a value that does
//! not decode (wrong type, wrong length, out of range, bad JSON) is a [`MetaError::Corrupt`]
//! naming the table, the column and the row's key.
//!
//! sqlx's `Row::get` panics on a decode failure; nothing in this crate calls it.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

use crate::error::MetaError;
use wormfs_parts::ids::{DiskId, FileId};

/// How the row is named in an error.
enum Key {
    /// Not named.
    None,
    /// By the value of one of its own columns (read only when an error is reported).
    Column(&'static str, usize),
    /// By a description the caller already has (e.g. the file id it asked for).
    Given(String),
}

/// One row of `table`, read column by column.
pub(crate) struct Cols<'r> {
    row: &'r SqliteRow,
    table: &'static str,
    key: Key,
}

impl<'r> Cols<'r> {
    /// A row of `table`.
    pub(crate) fn new(row: &'r SqliteRow, table: &'static str) -> Self {
        Self {
            row,
            table,
            key: Key::None,
        }
    }

    /// Errors name the row by its column `i` (called `name`).
    pub(crate) fn key_col(mut self, name: &'static str, i: usize) -> Self {
        self.key = Key::Column(name, i);
        self
    }

    /// Errors name the row by `key` (e.g. `file_id 00ab...`).
    pub(crate) fn key(mut self, key: impl Display) -> Self {
        self.key = Key::Given(key.to_string());
        self
    }

    fn key_text(&self) -> Option<String> {
        match &self.key {
            Key::None => None,
            Key::Given(s) => Some(s.clone()),
            Key::Column(name, i) => {
                let value = if let Ok(v) = self.row.try_get::<i64, _>(*i) {
                    v.to_string()
                } else if let Ok(v) = self.row.try_get::<String, _>(*i) {
                    format!("{v:?}")
                } else if let Ok(v) = self.row.try_get::<Vec<u8>, _>(*i) {
                    match FileId::from_slice(&v) {
                        Some(f) => f.to_string(),
                        None => v.iter().map(|b| format!("{b:02x}")).collect(),
                    }
                } else {
                    "unreadable".into()
                };
                Some(format!("{name} {value}"))
            }
        }
    }

    /// `table.column (key)`; a `col` that names its own table (`files.size`, from a join) is
    /// used as it is.
    pub(crate) fn what(&self, col: &str) -> String {
        let col = if col.contains('.') {
            col.to_owned()
        } else {
            format!("{}.{col}", self.table)
        };
        match self.key_text() {
            Some(k) => format!("{col} ({k})"),
            None => col,
        }
    }

    /// A [`MetaError::Corrupt`] about column `col` of this row.
    pub(crate) fn corrupt(&self, col: &str, detail: impl Display) -> MetaError {
        MetaError::corrupt(self.what(col), detail)
    }

    /// Column `i` (called `col`) as a `T`.
    pub(crate) fn col<T>(&self, i: usize, col: &str) -> Result<T, MetaError>
    where
        T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        self.row.try_get(i).map_err(|e| self.corrupt(col, e))
    }

    /// An integer column as a `T` (a size, a time, an index, a count): a value out of `T`'s
    /// range (a negative size, a part index over 65535) is corrupt, never wrapped.
    pub(crate) fn int<T: TryFrom<i64>>(&self, i: usize, col: &str) -> Result<T, MetaError> {
        let v: i64 = self.col(i, col)?;
        T::try_from(v).map_err(|_| {
            self.corrupt(
                col,
                format!(
                    "{v} is out of range for {}",
                    std::any::type_name::<T>().rsplit("::").next().unwrap_or("")
                ),
            )
        })
    }

    /// A nullable integer column as a `T`, range-checked like [`Self::int`].
    pub(crate) fn opt_int<T: TryFrom<i64>>(
        &self,
        i: usize,
        col: &str,
    ) -> Result<Option<T>, MetaError> {
        match self.col::<Option<i64>>(i, col)? {
            None => Ok(None),
            Some(_) => self.int(i, col).map(Some),
        }
    }

    /// A `u64` identifier stored as its 64-bit pattern (a node id, a filesystem device):
    /// apply binds these `as i64`, so every `i64` is the image of exactly one `u64` and is
    /// read back by the inverse cast. Not for sizes, times or indexes (see [`Self::int`]).
    pub(crate) fn id_bits(&self, i: usize, col: &str) -> Result<u64, MetaError> {
        let v: i64 = self.col(i, col)?;
        Ok(v as u64)
    }

    /// A 0/1 flag (any non-zero value is true, as apply has always read it).
    pub(crate) fn flag(&self, i: usize, col: &str) -> Result<bool, MetaError> {
        Ok(self.col::<i64>(i, col)? != 0)
    }

    /// A file id (16 bytes, big-endian).
    pub(crate) fn file_id(&self, i: usize, col: &str) -> Result<FileId, MetaError> {
        let b: Vec<u8> = self.col(i, col)?;
        FileId::from_slice(&b)
            .ok_or_else(|| self.corrupt(col, format!("a file id of {} bytes, not 16", b.len())))
    }

    /// A nullable file id.
    pub(crate) fn opt_file_id(&self, i: usize, col: &str) -> Result<Option<FileId>, MetaError> {
        match self.col::<Option<Vec<u8>>>(i, col)? {
            None => Ok(None),
            Some(_) => self.file_id(i, col).map(Some),
        }
    }

    /// A disk id (a UUID as text).
    pub(crate) fn disk_id(&self, i: usize, col: &str) -> Result<DiskId, MetaError> {
        let s: String = self.col(i, col)?;
        s.parse()
            .map(DiskId)
            .map_err(|e| self.corrupt(col, format!("{s:?} is not a disk id: {e}")))
    }

    /// A nullable disk id.
    pub(crate) fn opt_disk_id(&self, i: usize, col: &str) -> Result<Option<DiskId>, MetaError> {
        match self.col::<Option<String>>(i, col)? {
            None => Ok(None),
            Some(_) => self.disk_id(i, col).map(Some),
        }
    }

    /// A JSON column.
    pub(crate) fn json<T: DeserializeOwned>(&self, i: usize, col: &str) -> Result<T, MetaError> {
        let s: String = self.col(i, col)?;
        serde_json::from_str(&s).map_err(|e| self.corrupt(col, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn row(sql: &str) -> SqliteRow {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("memory db");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .expect("row")
    }

    #[tokio::test]
    async fn a_value_of_the_wrong_type_is_corrupt_with_table_column_and_key() {
        let r = row("SELECT 7, 'not a number'").await;
        let e = Cols::new(&r, "files")
            .key_col("id", 0)
            .int::<u64>(1, "size")
            .unwrap_err();
        assert!(e.is_corrupt(), "{e}");
        assert!(e.to_string().contains("files.size (id 7)"), "{e}");
    }

    #[tokio::test]
    async fn negative_sizes_and_large_indexes_are_refused_not_wrapped() {
        let r = row("SELECT -5, 70000, -1").await;
        let c = Cols::new(&r, "segments").key("file_id 1");
        let e = c.int::<u64>(0, "data_len").unwrap_err();
        assert!(e.to_string().contains("-5 is out of range for u64"), "{e}");
        let e = c.int::<u16>(1, "part").unwrap_err();
        assert!(e.to_string().contains("segments.part (file_id 1)"), "{e}");
        // Identifiers round-trip their bit pattern (apply binds them `as i64`).
        assert_eq!(c.id_bits(2, "node_id").unwrap(), u64::MAX);
    }

    #[tokio::test]
    async fn ids_of_the_wrong_shape_are_corrupt() {
        let r = row("SELECT X'0102', 'nope', NULL, '{'").await;
        let c = Cols::new(&r, "parts").key_col("file_id", 0);
        let e = c.file_id(0, "file_id").unwrap_err();
        assert!(e.to_string().contains("2 bytes, not 16"), "{e}");
        assert!(
            e.to_string().contains("parts.file_id (file_id 0102)"),
            "{e}"
        );
        assert!(c.disk_id(1, "disk_id").is_err());
        assert_eq!(c.opt_disk_id(2, "disk_id").unwrap(), None);
        assert_eq!(c.opt_file_id(2, "file_id").unwrap(), None);
        assert!(c.json::<serde_json::Value>(3, "geometry").is_err());
    }
}
