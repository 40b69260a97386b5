//! Config errors that name the file, the line and the field.
//!
//! Operators fix configs from the error text alone, so every error prints as
//! `FILE:LINE: FIELD: message`, and loading collects all of them before giving up.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The config file the problem is in.
    pub file: PathBuf,
    /// 1-based line number (0 when the problem is not tied to a line, e.g. an unreadable file).
    pub line: usize,
    /// Dotted field path, such as `routes[2].upstream`.
    pub field: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

/// Every problem found while loading a config; loading fails if there is at least one.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, issue) in self.issues.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects issues for one file, turning byte offsets into line numbers.
pub(crate) struct IssueSink<'a> {
    file: &'a Path,
    text: &'a str,
    issues: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
}

impl<'a> IssueSink<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            issues: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records something that is probably a mistake but leaves the config valid.
    pub(crate) fn warn(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.warnings.push(ConfigIssue {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span.start),
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem at a byte offset of the file.
    pub(crate) fn at(
        &mut self,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = line_of(self.text, offset);
        self.issues.push(ConfigIssue {
            file: self.file.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem tied to a span from `toml::Spanned`.
    pub(crate) fn span(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.at(span.start, field, message);
    }

    pub(crate) fn finish(mut self) -> Result<Vec<ConfigIssue>, ConfigError> {
        if self.issues.is_empty() {
            self.warnings.sort_by_key(|w| w.line);
            Ok(self.warnings)
        } else {
            self.issues.sort_by_key(|issue| issue.line);
            Err(ConfigError {
                issues: self.issues,
            })
        }
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Turns a TOML parse/deserialize error into an issue with a dotted field path.
///
/// `toml` reports a byte span but not the table the key sits in, so the field path is rebuilt
/// from the nearest table header above the error (`[[routes]]` headers are counted so the path
/// reads `routes[1].path`).
pub(crate) fn from_toml_error(file: &Path, text: &str, error: &toml::de::Error) -> ConfigIssue {
    let offset = error.span().map(|span| span.start).unwrap_or(0);
    let line = if error.span().is_some() {
        line_of(text, offset)
    } else {
        0
    };
    let field = field_at_line(text, line);
    let message = error.message().trim().replace('\n', " ");
    ConfigIssue {
        file: file.to_path_buf(),
        line,
        field,
        message,
    }
}

fn field_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    let mut key = String::new();
    for (index, raw) in text.lines().enumerate() {
        let current = raw.trim();
        if let Some(name) = current
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_string();
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{count}]");
        } else if let Some(name) = current.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
        }
        if index + 1 == line {
            if let Some((name, _)) = current.split_once('=') {
                key = name.trim().trim_matches('"').to_string();
            }
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".to_string(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_path_counts_array_tables() {
        let text = "[listen]\naddr = 1\n[[routes]]\nname='a'\n[[routes]]\nname='b'\npath = 3\n";
        assert_eq!(field_at_line(text, 2), "listen.addr");
        assert_eq!(field_at_line(text, 7), "routes[1].path");
    }

    #[test]
    fn display_is_file_line_field_message() {
        let issue = ConfigIssue {
            file: PathBuf::from("w.toml"),
            line: 7,
            field: "routes[0].upstream".into(),
            message: "unknown upstream `x`".into(),
        };
        assert_eq!(
            issue.to_string(),
            "w.toml:7: routes[0].upstream: unknown upstream `x`"
        );
    }
}
