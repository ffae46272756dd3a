//! Reading CSV tables (optionally gzip-compressed) by column name, with errors that name
//! the file, the line and the column.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// A CSV or CSV.gz file opened with its header parsed.
pub(crate) struct Table {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read>>,
    headers: csv::StringRecord,
}

/// One data row with its line number.
pub(crate) struct Row<'a> {
    table: &'a Table,
    record: csv::StringRecord,
    pub line: u64,
}

impl Table {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let inner: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = csv::Reader::from_reader(inner);
        let headers = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            headers,
        })
    }

    /// Index of a required column.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: self.path.clone(),
                column: name.into(),
                found: self.headers.iter().collect::<Vec<_>>().join(","),
            })
    }

    /// Index of the first of several accepted names (case-insensitive); the error names the
    /// first.
    pub fn any_column(&self, names: &[&str]) -> Result<usize> {
        self.headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
            .ok_or_else(|| DataError::MissingColumn {
                path: self.path.clone(),
                column: names[0].into(),
                found: self.headers.iter().collect::<Vec<_>>().join(","),
            })
    }

    /// Index of an optional column.
    pub fn optional_column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h.trim() == name)
    }

    /// Visit every row in order.
    pub fn for_each(mut self, mut f: impl FnMut(&Row<'_>) -> Result<()>) -> Result<()> {
        let mut record = csv::StringRecord::new();
        loop {
            match self.reader.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    let row = Row {
                        table: &self,
                        record: std::mem::take(&mut record),
                        line,
                    };
                    f(&row)?;
                    record = row.record;
                }
                Err(e) => return Err(csv_error(&self.path, &e)),
            }
        }
    }
}

impl Row<'_> {
    pub fn get(&self, column: usize) -> &str {
        self.record.get(column).unwrap_or("").trim()
    }

    /// An error about `column` of this row.
    pub fn error(&self, column: usize, reason: impl Into<String>) -> DataError {
        DataError::Csv {
            path: self.table.path.clone(),
            line: self.line,
            column: self.table.headers.get(column).unwrap_or("").to_string(),
            reason: reason.into(),
        }
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> DataError {
    DataError::Csv {
        path: path.to_path_buf(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        column: String::new(),
        reason: e.to_string(),
    }
}
