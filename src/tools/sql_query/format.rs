//! The text a `sql_query` result becomes: `format_result` and `format_value` of
//! `training/sales_db.py` (what sluice-tiny was trained on), value for value, with the
//! row and byte caps of the tool and a `[cut: ...]` note when they are hit.

use std::fmt::Write as _;

use rusqlite::types::ValueRef;

/// The result text under the row and byte caps, as `format_result` writes it.
pub(super) struct Output {
    text: String,
    rows: usize,
    single_column: bool,
    max_rows: usize,
    max_bytes: usize,
    cut: Option<String>,
}

impl Output {
    pub(super) fn new(columns: usize, max_rows: usize, max_bytes: usize) -> Self {
        Output {
            text: String::new(),
            rows: 0,
            single_column: columns == 1,
            max_rows,
            max_bytes,
            cut: None,
        }
    }

    /// Adds a row; false when the caps are reached (the rest is not read).
    pub(super) fn push(&mut self, values: &[String]) -> bool {
        if self.rows == self.max_rows {
            self.cut = Some(format!(
                "only the first {} rows are shown; use LIMIT, WHERE or an aggregate",
                self.max_rows
            ));
            return false;
        }
        let sep = match (self.rows, self.single_column) {
            (0, _) => "",
            (_, true) => ", ",
            (_, false) => "; ",
        };
        let row = values.join(": ");
        if self.text.len() + sep.len() + row.len() > self.max_bytes {
            let room = self.max_bytes.saturating_sub(self.text.len());
            let piece = format!("{sep}{row}");
            let mut end = room.min(piece.len());
            while !piece.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&piece[..end]);
            self.cut = Some(format!(
                "the result is longer than {} bytes; use LIMIT, WHERE or an aggregate",
                self.max_bytes
            ));
            return false;
        }
        self.text.push_str(sep);
        self.text.push_str(&row);
        self.rows += 1;
        true
    }

    pub(super) fn finish(mut self) -> String {
        match self.cut {
            Some(why) => {
                let _ = write!(self.text, " [cut: {why}]");
                self.text
            }
            None if self.rows == 0 => "no rows".into(),
            None => self.text,
        }
    }
}

/// One value as `format_value` in `training/sales_db.py` writes it.
pub fn format_value(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format_float(f),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => python_bytes_repr(b),
    }
}

/// Whole floats as integers (all digits), others to 2 decimals without trailing zeros.
pub fn format_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 {
        if f == 0.0 {
            return "0".into(); // Python's int(-0.0) is 0
        }
        return format!("{f:.0}");
    }
    let s = format!("{f:.2}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s // inf, -inf
    }
}

/// Python's `str(bytes)`: `b'\x00\xffA'`.
pub fn python_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = String::with_capacity(b.len() + 3);
    s.push('b');
    s.push(char::from(quote));
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c == quote => {
                s.push('\\');
                s.push(char::from(c));
            }
            0x20..=0x7e => s.push(char::from(c)),
            c => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push(char::from(quote));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_blobs_print_like_python() {
        assert_eq!(format_float(1e300).len(), 301);
        assert!(format_float(1e300).starts_with("10000000000000000525047602552044"));
        assert_eq!(format_float(0.375), "0.38");
        assert_eq!(format_float(2.675), "2.67");
        assert_eq!(format_float(-2.0), "-2");
        assert_eq!(format_float(5.999), "6");
        assert_eq!(python_bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(
            python_bytes_repr(b"'\"\\\\\t\n\r\x7f"),
            "b'\\'\"\\\\\\\\\\t\\n\\r\\x7f'"
        );
    }
}
