//! A streaming reader of multipart/form-data bodies (RFC 7578), as LXD's image export sends
//! a split image: parts are read one after the other, each as a plain `Read`, without
//! holding more than a small window of the body in memory. A body that ends before its
//! closing delimiter is an `UnexpectedEof` error, so a truncated download never reads as
//! whole.

use std::io::{self, Read};

/// The largest header block a part may have.
const MAX_HEADERS: usize = 16 << 10;
/// How much is asked of the inner reader at a time.
const CHUNK: usize = 64 << 10;

/// The headers of one part that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    /// The form field's `name` (`metadata`, `rootfs`).
    pub name: String,
    /// The `filename`, empty when none was given.
    pub filename: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a part's body (the preamble before the first part counts as one).
    InPart,
    /// The unread bytes start with the delimiter that ends the current part.
    AtDelimiter,
    /// The closing delimiter was read.
    Done,
}

/// Reads the parts of a multipart body: [`next_part`](Self::next_part) moves to the next
/// part and returns its headers; `read` reads that part's body.
pub struct MultipartReader<R> {
    inner: R,
    /// `\r\n--<boundary>`.
    delimiter: Vec<u8>,
    /// The window: `buf[start..end]` is read from the body and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    state: State,
}

impl<R: Read> MultipartReader<R> {
    /// A reader of the body `inner` whose parts `boundary` separates.
    pub fn new(inner: R, boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The first delimiter may open the body with no line break before it: with one
        // added, it is found like the others (and a preamble is read as a part skipped).
        MultipartReader {
            inner,
            delimiter,
            buf: b"\r\n".to_vec(),
            start: 0,
            end: 2,
            state: State::InPart,
        }
    }

    /// Skips what is left of the current part and returns the next part's headers, or
    /// `None` after the last part.
    pub fn next_part(&mut self) -> io::Result<Option<PartHeaders>> {
        if self.state == State::InPart {
            io::copy(self, &mut io::sink())?;
        }
        if self.state == State::Done {
            return Ok(None);
        }
        self.want(self.delimiter.len() + 2)?;
        self.start += self.delimiter.len();
        if self.unread().starts_with(b"--") {
            self.state = State::Done;
            return Ok(None);
        }
        // The rest of the delimiter line (transport padding), then header lines up to an
        // empty line: find the blank line that ends them.
        let end = loop {
            if let Some(i) = find(self.unread(), b"\r\n\r\n") {
                break i;
            }
            if self.unread().len() > MAX_HEADERS {
                return Err(invalid("multipart part headers are too long"));
            }
            if !self.fill()? {
                return Err(truncated());
            }
        };
        let block = String::from_utf8_lossy(&self.unread()[..end]).into_owned();
        self.start += end + 4;
        let mut lines = block.split("\r\n");
        let padding = lines.next().unwrap_or_default();
        if !padding.trim_matches([' ', '\t']).is_empty() {
            return Err(invalid("multipart delimiter followed by junk"));
        }
        let mut headers = PartHeaders::default();
        for line in lines {
            let Some((key, value)) = line.split_once(':') else {
                return Err(invalid("multipart part header without a colon"));
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                let (_, params) = parse_header_value(value);
                for (k, v) in params {
                    match k.as_str() {
                        "name" => headers.name = v,
                        "filename" => headers.filename = v,
                        _ => {}
                    }
                }
            }
        }
        self.state = State::InPart;
        Ok(Some(headers))
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more of the body into the window; false at its end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() + CHUNK, 0);
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        Ok(n > 0)
    }

    /// At least `n` unread bytes, or a truncation error.
    fn want(&mut self, n: usize) -> io::Result<()> {
        while self.unread().len() < n {
            if !self.fill()? {
                return Err(truncated());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for MultipartReader<R> {
    /// The current part's bytes; 0 at its end.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state != State::InPart || out.is_empty() {
            return Ok(0);
        }
        loop {
            let unread = self.unread();
            // Bytes that cannot be the start of a delimiter are the part's.
            let (ready, at_delimiter) = match find(unread, &self.delimiter) {
                Some(i) => (i, true),
                None => (unread.len().saturating_sub(self.delimiter.len() - 1), false),
            };
            if ready > 0 {
                let n = ready.min(out.len());
                out[..n].copy_from_slice(&unread[..n]);
                self.start += n;
                return Ok(n);
            }
            if at_delimiter {
                self.state = State::AtDelimiter;
                return Ok(0);
            }
            if !self.fill()? {
                return Err(truncated());
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the multipart body ends before its closing delimiter",
    )
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A header value with parameters (`form-data; name="rootfs"; filename=x.tar.xz`): the
/// value lower-cased, and the parameters with lower-case names, quoted or not.
pub fn parse_header_value(value: &str) -> (String, Vec<(String, String)>) {
    let mut rest = value.trim();
    let first = rest.find(';').unwrap_or(rest.len());
    let kind = rest[..first].trim().to_ascii_lowercase();
    rest = &rest[first..];
    let mut params = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        let Some(eq) = after.find('=') else { break };
        let key = after[..eq].trim().to_ascii_lowercase();
        let tail = after[eq + 1..].trim_start();
        let (v, remaining) = if let Some(quoted) = tail.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            v.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end..])
        } else {
            let end = tail.find(';').unwrap_or(tail.len());
            (tail[..end].trim().to_string(), &tail[end..])
        };
        params.push((key, v));
        rest = remaining.trim_start();
    }
    (kind, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as Go's `multipart.Writer` (and hutchd's export) writes it.
    fn body(boundary: &str, parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (name, file, data)) in parts.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    /// Hands out at most `step` bytes per read, to cross every window edge.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read_all(
        data: &[u8],
        boundary: &str,
        step: usize,
    ) -> io::Result<Vec<(PartHeaders, Vec<u8>)>> {
        let mut reader = MultipartReader::new(Trickle(data, step), boundary);
        let mut parts = Vec::new();
        while let Some(h) = reader.next_part()? {
            let mut v = Vec::new();
            reader.read_to_end(&mut v)?;
            parts.push((h, v));
        }
        Ok(parts)
    }

    #[test]
    fn parts_are_read_whole_at_any_read_size() {
        let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        // Data that looks like a delimiter's start without being one.
        let tricky = b"\r\n--bound\r\n-\r\n--boundar".to_vec();
        let data = body(
            "boundary",
            &[
                ("metadata", "meta.tar.xz", &tricky),
                ("rootfs", "r.tar.xz", &big),
            ],
        );
        for step in [1, 7, 4096, 1 << 20] {
            let parts = read_all(&data, "boundary", step).unwrap();
            assert_eq!(parts.len(), 2, "step {step}");
            assert_eq!(parts[0].0.name, "metadata");
            assert_eq!(parts[0].0.filename, "meta.tar.xz");
            assert_eq!(parts[0].1, tricky);
            assert_eq!(parts[1].0.name, "rootfs");
            assert_eq!(parts[1].1, big);
        }
    }

    #[test]
    fn an_empty_part_and_a_skipped_part_read_right() {
        let data = body("b", &[("metadata", "m", b""), ("rootfs", "r", b"xyz")]);
        let mut reader = MultipartReader::new(&data[..], "b");
        assert_eq!(reader.next_part().unwrap().unwrap().name, "metadata");
        // Not read: skipped by the next call.
        let second = reader.next_part().unwrap().unwrap();
        assert_eq!(second.name, "rootfs");
        let mut v = Vec::new();
        reader.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"xyz");
        assert!(reader.next_part().unwrap().is_none());
        assert!(reader.next_part().unwrap().is_none());
    }

    #[test]
    fn a_truncated_body_is_an_error() {
        let data = body(
            "b",
            &[("metadata", "m", b"meta"), ("rootfs", "r", &[7u8; 5000])],
        );
        for cut in [0, 10, 60, 200, data.len() - 10, data.len() - 3] {
            let err = read_all(&data[..cut], "b", 100).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        assert!(read_all(&data, "other", 100).is_err());
    }

    #[test]
    fn header_values_parse_quoted_or_not() {
        let (kind, params) =
            parse_header_value(r#"form-data; name="rootfs"; filename="a \"b\".tar""#);
        assert_eq!(kind, "form-data");
        assert_eq!(params[0], ("name".into(), "rootfs".into()));
        assert_eq!(params[1], ("filename".into(), "a \"b\".tar".into()));
        let (kind, params) = parse_header_value("attachment;filename=abc.tar.xz");
        assert_eq!(kind, "attachment");
        assert_eq!(params, [("filename".into(), "abc.tar.xz".into())]);
        let (kind, params) = parse_header_value("Multipart/Form-Data; boundary=xYz");
        assert_eq!(kind, "multipart/form-data");
        assert_eq!(params, [("boundary".into(), "xYz".into())]);
    }
}
