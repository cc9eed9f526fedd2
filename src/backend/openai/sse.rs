//! Incremental server-sent events decoder for upstream bodies: bytes in, each complete
//! event's `data` out, as the WHATWG `text/event-stream` rules say (lines end with LF,
//! CRLF or CR, even when a CRLF is split across two reads; a leading BOM is skipped;
//! `:` comments, `event`, `id` and `retry` fields are ignored; several `data` lines join
//! with LF; an event without data is not dispatched; an unterminated event at the end
//! is dropped). It works on bytes, not `str`: the JSON parser that reads the data
//! validates UTF-8 where it matters, and nothing is copied into intermediate `String`s.
//! It replaced `eventsource-stream`, whose parser and per-event allocations were 3% of
//! the proxy hot path's CPU (`loadtest/README.md`).

use bytes::{Buf, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Default)]
pub struct Decoder {
    /// Bytes not yet split into lines.
    buf: BytesMut,
    /// The event being assembled: its `data` lines, each followed by LF.
    data: Vec<u8>,
    /// The previous line ended with a CR at the end of a read: a LF first is its pair.
    after_cr: bool,
    /// The BOM check at the start of the stream is done.
    started: bool,
}

impl Decoder {
    /// Add the next bytes of the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event's data, if the bytes pushed so far hold one.
    pub fn next_data(&mut self) -> Option<Vec<u8>> {
        if !self.started {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return None;
            }
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.started = true;
        }
        loop {
            if self.after_cr && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.after_cr = false;
            }
            let end = memchr::memchr2(b'\n', b'\r', &self.buf)?;
            let dispatch = take_line(&mut self.data, &self.buf[..end]);
            let terminator = self.buf[end];
            self.buf.advance(end + 1);
            if terminator == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if dispatch {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                return Some(data);
            }
        }
    }
}

/// Take in one line of an event into its `data`; true when the line is blank and ends
/// an event that has data.
fn take_line(data: &mut Vec<u8>, line: &[u8]) -> bool {
    if line.is_empty() {
        return !data.is_empty();
    }
    let (field, value) = match memchr::memchr(b':', line) {
        Some(0) => return false, // a comment
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &b""[..]),
    };
    if field == b"data" {
        data.reserve(value.len() + 1);
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> Vec<String> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p);
            while let Some(data) = d.next_data() {
                out.push(String::from_utf8(data).unwrap());
            }
        }
        out
    }

    #[test]
    fn fields_comments_and_dispatch_follow_the_spec() {
        // A comment and an event without data dispatch nothing; two data lines join with
        // LF and lose one leading space each; `data` alone is an empty line of data.
        let body = b": hello\n\nevent: ping\n\ndata: a\ndata:  b\nid: 1\n\ndata\n\ndata:x\n\n";
        assert_eq!(decode(&[body]), ["a\n b", "", "x"]);
    }

    #[test]
    fn every_line_ending_and_a_bom() {
        let body = b"\xEF\xBB\xBFdata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n";
        assert_eq!(decode(&[body]), ["1", "2", "3"]);
        // A CRLF cut between its two bytes is one line end, not two.
        assert_eq!(decode(&[b"data: 1\r", b"\ndata: 2\r\n\r\n"]), ["1\n2"]);
        // A BOM cut in two is still skipped.
        assert_eq!(decode(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]), ["x"]);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut d = Decoder::default();
        d.push(b"data: partial\n");
        assert_eq!(d.next_data(), None);
        d.push(b"\n");
        assert_eq!(d.next_data().as_deref(), Some(&b"partial"[..]));
    }

    proptest::proptest! {
        /// However a body is cut, the events are the same.
        #[test]
        fn cuts_do_not_change_the_events(cuts in proptest::collection::vec(0usize..80, 0..8)) {
            let body: &[u8] = b"\xEF\xBB\xBFdata: {\"a\":1}\r\n\r\n: c\rdata: b\r\rdata: x\ndata: y\n\n";
            let pieces = crate::backend::body::split_at(body, cuts);
            let pieces: Vec<_> = pieces.into_iter().map(Result::unwrap).collect();
            let pieces: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
            proptest::prop_assert_eq!(decode(&pieces), ["{\"a\":1}", "b", "x\ny"]);
        }
    }
}
