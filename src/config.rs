//! Reading TOML config files: one parse that names the file, and the line and column
//! of any error, for every config kind; and a setting given once for every table or
//! once per table ([`PerTable`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: &Path, message: impl ToString) -> Self {
        ConfigError { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// Parses `text` (read from `path`) as `T`; errors carry the line and column, and are
/// one line.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let position = e.span().map(|span| position(text, span.clone())).unwrap_or_default();
        let mut message = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
        if message.is_empty() {
            message = unexplained(text, e.span().map_or(text.len(), |span| span.start));
        }
        ConfigError::new(path, format!("{position}{message}"))
    })
}

/// `line L, column C: ` of the start of `span` in `text`. An error spanning a whole
/// table (a field of a tagged table such as `[trace]`, whose error has lost the field's
/// own position) also names the table's header line.
fn position(text: &str, span: std::ops::Range<usize>) -> String {
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let table = text
        .get(span)
        .filter(|spanned| spanned.len() < text.trim_end().len())
        .and_then(|spanned| spanned.split_once('\n'))
        .map(|(first, _)| first.trim())
        .filter(|first| first.starts_with('['));
    match table {
        Some(header) => format!("line {line}, column {column}: in `{header}`: "),
        None => format!("line {line}, column {column}: "),
    }
}

/// What is wrong at byte `at` of `text`, for the syntax errors the TOML parser leaves
/// without a message (a value missing at the end of the file, a control character).
fn unexplained(text: &str, at: usize) -> String {
    match text.get(at..).and_then(|rest| rest.chars().next()) {
        None => "unexpected end of the file (a value is missing?)".into(),
        Some('\n' | '\r') => "unexpected end of the line (a value is missing?)".into(),
        Some(c) if c.is_control() => format!("control character {} is not allowed here", c.escape_unicode()),
        Some(c) => format!("invalid TOML at `{c}`"),
    }
}

/// Reads the file at `path`, which must be UTF-8 (an error names the line and column
/// of the first bad byte).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::new(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        ConfigError::new(path, format!("line {line}, column {column}: not valid UTF-8 (byte {})", valid.len()))
    })
}

/// `[output]` of a config: where a run writes its reports.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub dir: PathBuf,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec { dir: PathBuf::from("out/run") }
    }
}

/// A setting of the embedding tables given once for every table, or once per table (a
/// list as long as the tables), as `embedding_dim = 128` or `embedding_dim = [128, 64, ..]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerTable<T> {
    One(T),
    Each(Vec<T>),
}

impl<T> From<T> for PerTable<T> {
    fn from(value: T) -> Self {
        PerTable::One(value)
    }
}

impl<T: Clone + PartialEq> PerTable<T> {
    /// The setting of each of `tables` tables, or how many values were given when they
    /// are neither one nor one per table.
    pub fn of(&self, tables: usize) -> Result<Vec<T>, usize> {
        match self {
            PerTable::One(value) => Ok(vec![value.clone(); tables]),
            PerTable::Each(values) if values.len() == tables => Ok(values.clone()),
            PerTable::Each(values) => Err(values.len()),
        }
    }

    /// The one value every table has, if they share one.
    pub fn single(&self) -> Option<T> {
        match self {
            PerTable::One(value) => Some(value.clone()),
            PerTable::Each(values) => values.first().filter(|first| values.iter().all(|v| v == *first)).cloned(),
        }
    }

    /// The values as given.
    pub fn values(&self) -> &[T] {
        match self {
            PerTable::One(value) => std::slice::from_ref(value),
            PerTable::Each(values) => values,
        }
    }
}

impl<T: Clone + PartialEq + std::fmt::Display> std::fmt::Display for PerTable<T> {
    /// The one value, or the list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.single() {
            Some(value) => write!(f, "{value}"),
            None => {
                let values: Vec<String> = self.values().iter().map(T::to_string).collect();
                write!(f, "[{}]", values.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse_toml::<toml::Table>(Path::new("c.toml"), text).expect_err("bad TOML").to_string()
    }

    #[test]
    fn syntax_errors_the_parser_leaves_unexplained_still_say_what_is_wrong() {
        assert_eq!(error("a = 1\nb = "), "c.toml: line 2, column 5: unexpected end of the file (a value is missing?)");
        assert_eq!(error("# note\u{3}\na = 1\n"), "c.toml: line 1, column 7: control character \\u{3} is not allowed here");
    }
}
