//! Diagnostics: every problem names the file, line and column and says what
//! was expected, so an operator can fix a topology without reading code.

use std::fmt;
use std::ops::Range;

/// A topology that did not load; holds every problem found, sorted by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct TopologyError {
    /// All problems found, sorted by (line, col), so one edit-and-retry cycle
    /// can fix them all instead of one per run.
    pub errors: Vec<Diagnostic>,
}

fn lines(errors: &[Diagnostic]) -> String {
    errors
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as the caller gave it.
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole (cannot be
    /// read), in which case `col` is 0 too and Display omits both.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

/// Collects diagnostics for one file and turns byte spans into line/col.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset where each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
    errors: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Sink {
            file,
            text,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based (line, col) of a byte offset; col counts characters.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let index = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let start = self.line_starts.get(index).copied().unwrap_or(0);
        let col = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (index + 1, col + 1)
    }

    /// Records a problem at the start of `span`.
    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.position(span.start);
        self.errors.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            col,
            message: message.into(),
        });
    }

    /// `Ok(())` when nothing was recorded, else every diagnostic by line.
    pub(crate) fn finish(self) -> Result<(), TopologyError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// Every diagnostic recorded so far, sorted by position.
    pub(crate) fn into_error(mut self) -> TopologyError {
        self.errors.sort_by_key(|d| (d.line, d.col));
        TopologyError {
            errors: self.errors,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let sink = Sink::new("t.toml", "ab\nçd = 1\n");
        assert_eq!(sink.position(0), (1, 1));
        assert_eq!(sink.position(1), (1, 2));
        assert_eq!(sink.position(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(sink.position(5), (2, 2));
        assert_eq!(sink.position(999), (3, 1));
    }

    #[test]
    fn display_is_file_line_col_message() {
        let mut sink = Sink::new("t.toml", "a\nb\n");
        sink.error(2..3, "second");
        sink.error(0..1, "first");
        let err = sink.finish().unwrap_err();
        assert_eq!(err.to_string(), "t.toml:1:1: first\nt.toml:2:1: second");
        let whole = Diagnostic {
            file: "t.toml".into(),
            line: 0,
            col: 0,
            message: "cannot read".into(),
        };
        assert_eq!(whole.to_string(), "t.toml: cannot read");
    }
}
