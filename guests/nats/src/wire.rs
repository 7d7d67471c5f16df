//! NATS client protocol wire format: frame boundaries, control lines,
//! header blocks, and the messages the server sends.
//!
//! Reference: the NATS client protocol documentation and nats-server's
//! parser (control lines end in CRLF; `PUB`/`HPUB` are followed by a payload
//! of the announced size and a CRLF).

use sandport_guest::{parse_decimal, put_decimal};

/// Longest control line nats-server accepts (`MAX_CONTROL_LINE_SIZE`).
pub const MAX_CONTROL_LINE: usize = 4096;

/// The operations at the start of a buffer, one at a time, each read in
/// one pass: its control line and, for `PUB`/`HPUB`, the payload the line
/// announces. An operation that cannot be read is an error item covering
/// its line (a line longer than [`MAX_CONTROL_LINE`]: its first bytes), so
/// the handler can answer it as nats-server does.
pub struct Frames<'a> {
    buffer: &'a [u8],
    max_payload: usize,
    handled: usize,
    needs: Option<u32>,
}

impl<'a> Frames<'a> {
    pub fn new(buffer: &'a [u8], max_payload: usize) -> Self {
        Self { buffer, max_payload, handled: 0, needs: None }
    }

    /// Bytes of the operations returned so far.
    pub fn handled(&self) -> usize {
        self.handled
    }

    /// Once no operation is left: the next one's total size, when its line
    /// is complete and announces a payload.
    pub fn needs(&self) -> Option<u32> {
        self.needs
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Op<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buffer[self.handled..];
        let window = &rest[..rest.len().min(MAX_CONTROL_LINE + 2)];
        let (newline, ascii) = find_line_end(window);
        let Some(newline) = newline else {
            if rest.len() > MAX_CONTROL_LINE {
                self.handled += MAX_CONTROL_LINE + 1;
                return Some(Err(ParseError::ControlLineTooLong));
            }
            return None;
        };
        let line_end = newline + 1;
        if newline > MAX_CONTROL_LINE {
            self.handled += line_end;
            return Some(Err(ParseError::ControlLineTooLong));
        }
        let line = match line_text(&rest[..newline], ascii) {
            Some(text) => read_line(text, self.max_payload),
            None => Err(ParseError::UnknownOperation),
        };
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                self.handled += line_end;
                return Some(Err(e));
            }
        };
        let (subject, reply, header_size, size) = match line {
            Line::Op(op) => {
                self.handled += line_end;
                return Some(Ok(op));
            }
            Line::Publish { subject, reply, header_size, size } => (subject, reply, header_size, size),
        };
        let total = line_end + size + 2;
        if total > rest.len() {
            self.needs = Some(total as u32);
            return None;
        }
        self.handled += total;
        // Byte by byte: `strip_suffix` was not inlined, a call per message.
        if rest[total - 2] != b'\r' || rest[total - 1] != b'\n' {
            return Some(Err(ParseError::UnknownOperation));
        }
        let body = &rest[line_end..total - 2];
        let (headers, payload) = match header_size {
            // nats-server takes an empty header block as none (a plain `MSG`).
            Some(0) | None => (None, body),
            Some(header_size) => {
                let (headers, payload) = body.split_at(header_size);
                (Some(headers), payload)
            }
        };
        Some(Ok(Op::Pub { subject, reply, headers, payload }))
    }
}

/// Control-line arguments are separated by spaces and tabs.
fn is_separator(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// A size or count as nats-server reads it: decimal digits only.
fn decimal(text: &[u8]) -> Option<usize> {
    parse_decimal(text).and_then(|value| usize::try_from(value).ok())
}

/// The words of `args`, split at spaces and tabs, and how many there are;
/// `None` if more than `N`. The separators are ASCII, so every word is a
/// valid `str` slice of the line. Two tight loops (separators, then a word)
/// rather than one that tracks where a word started.
fn words<const N: usize>(args: &str) -> Option<([&str; N], usize)> {
    let bytes = args.as_bytes();
    let mut slots = [""; N];
    let mut count = 0;
    let mut at = 0;
    loop {
        while at < bytes.len() && is_separator(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            return Some((slots, count));
        }
        let start = at;
        while at < bytes.len() && !is_separator(bytes[at]) {
            at += 1;
        }
        if count == N {
            return None;
        }
        slots[count] = &args[start..at];
        count += 1;
    }
}

/// Where the control line at the start of `window` ends (the index of its
/// LF), and whether the bytes before that are all ASCII: one pass, eight
/// bytes at a time. This runs for every operation; a byte at a time it was
/// the guest's largest cost. (The `memchr` crate reads four bytes at a time
/// on wasm32 and would leave the ASCII check to a second pass.)
fn find_line_end(window: &[u8]) -> (Option<usize>, bool) {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_le_bytes([b'\n'; 8]);
    // Every byte before the line's end, ORed: ASCII if no high bit is set.
    let mut seen = 0u64;
    let mut chunks = window.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        // Zero bytes of `diff` are LFs of `word`. The test below flags every
        // zero byte and may flag bytes above one (a borrow), so its lowest
        // flag is the first LF.
        let diff = word ^ NEWLINES;
        let newlines = diff.wrapping_sub(ONES) & !diff & HIGH_BITS;
        if newlines != 0 {
            let offset = newlines.trailing_zeros() as usize / 8;
            let before = word & ((1u64 << (8 * offset)) - 1);
            return (Some(index * 8 + offset), (seen | before) & HIGH_BITS == 0);
        }
        seen |= word;
    }
    let tail = window.len() - chunks.remainder().len();
    let mut ascii = seen & HIGH_BITS == 0;
    for (offset, &byte) in chunks.remainder().iter().enumerate() {
        if byte == b'\n' {
            return (Some(tail + offset), ascii);
        }
        ascii &= byte.is_ascii();
    }
    (None, ascii)
}

/// A parsed client operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Connect(&'a str),
    Pub { subject: &'a str, reply: Option<&'a str>, headers: Option<&'a [u8]>, payload: &'a [u8] },
    Sub { subject: &'a str, queue: Option<&'a str>, sid: &'a str },
    Unsub { sid: &'a str, max: Option<u64> },
    Ping,
    Pong,
}

/// Why a frame could not be parsed; each maps to nats-server's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    UnknownOperation,
    /// Wrong number or form of arguments: nats-server closes silently.
    BadArguments,
    ControlLineTooLong,
    PayloadTooLarge,
}

impl ParseError {
    /// The `-ERR` text nats-server sends.
    pub fn text(&self) -> &'static str {
        match self {
            ParseError::UnknownOperation | ParseError::BadArguments => "Unknown Protocol Operation",
            ParseError::ControlLineTooLong => "Maximum Control Line Exceeded",
            ParseError::PayloadTooLarge => "Maximum Payload Violation",
        }
    }
}

/// A control line: an operation, or a publication whose payload follows.
enum Line<'a> {
    Op(Op<'a>),
    Publish { subject: &'a str, reply: Option<&'a str>, header_size: Option<usize>, size: usize },
}

/// A control line as text, `None` if it is not UTF-8. `ascii` says the
/// caller saw no byte above 0x7F in it.
fn line_text(line: &[u8], ascii: bool) -> Option<&str> {
    if ascii {
        debug_assert!(line.is_ascii());
        // SAFETY: every byte is below 0x80 (the caller ORed them all), and
        // ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(line) });
    }
    std::str::from_utf8(line).ok()
}

/// An operation's name in upper case, as nats-server matches it without
/// regard to case; empty if it is none. The length and one letter pick the
/// only candidate, so one comparison decides.
fn op_name(name: &[u8]) -> &'static [u8] {
    let candidate: &'static [u8] = match name.len() {
        3 if name[0].eq_ignore_ascii_case(&b'P') => b"PUB",
        3 => b"SUB",
        4 if name[1].eq_ignore_ascii_case(&b'P') => b"HPUB",
        4 if name[1].eq_ignore_ascii_case(&b'I') => b"PING",
        4 => b"PONG",
        5 => b"UNSUB",
        7 => b"CONNECT",
        _ => return b"",
    };
    if candidate.eq_ignore_ascii_case(name) { candidate } else { b"" }
}

/// Read one control line (without its LF).
fn read_line(line: &str, max_payload: usize) -> Result<Line<'_>, ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let op_end = line.bytes().position(is_separator).unwrap_or(line.len());
    let (op, args) = line.split_at(op_end);
    let args = args.trim_start_matches([' ', '\t']);
    // No allocation per operation: none takes more than four words (`None`
    // below).
    let words = words::<4>(args);
    let words = words.as_ref().map(|(slots, count)| &slots[..*count]);
    // Compared as bytes: a second UTF-8 check of the name cost a call per
    // operation.
    let op = op_name(op.as_bytes());
    // Sent bare, an operation that takes arguments is no operation at all
    // to nats-server ("Unknown Protocol Operation"); malformed arguments
    // close the connection without a word.
    if op_end == line.len() && matches!(op, b"PUB" | b"HPUB" | b"SUB" | b"UNSUB") {
        return Err(ParseError::UnknownOperation);
    }
    let payload_size = |text: &str| {
        let size = decimal(text.as_bytes()).ok_or(ParseError::BadArguments)?;
        if size > max_payload {
            return Err(ParseError::PayloadTooLarge);
        }
        Ok(size)
    };
    let op = match op {
        b"CONNECT" => Op::Connect(args),
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"PUB" => {
            let (subject, reply, size) = match words {
                Some([subject, size]) => (*subject, None, *size),
                Some([subject, reply, size]) => (*subject, Some(*reply), *size),
                _ => return Err(ParseError::BadArguments),
            };
            let size = payload_size(size)?;
            return Ok(Line::Publish { subject, reply, header_size: None, size });
        }
        b"HPUB" => {
            let (subject, reply, header_size, total) = match words {
                Some([subject, h, t]) => (*subject, None, *h, *t),
                Some([subject, reply, h, t]) => (*subject, Some(*reply), *h, *t),
                _ => return Err(ParseError::BadArguments),
            };
            let header_size = decimal(header_size.as_bytes()).ok_or(ParseError::BadArguments)?;
            let size = payload_size(total)?;
            if header_size > size {
                return Err(ParseError::BadArguments);
            }
            return Ok(Line::Publish { subject, reply, header_size: Some(header_size), size });
        }
        b"SUB" => match words {
            Some([subject, sid]) => Op::Sub { subject, queue: None, sid },
            Some([subject, queue, sid]) => Op::Sub { subject, queue: Some(queue), sid },
            _ => return Err(ParseError::BadArguments),
        },
        b"UNSUB" => match words {
            Some([sid]) => Op::Unsub { sid, max: None },
            Some([sid, max]) => {
                Op::Unsub { sid, max: Some(max.parse().map_err(|_| ParseError::BadArguments)?) }
            }
            _ => return Err(ParseError::BadArguments),
        },
        _ => return Err(ParseError::UnknownOperation),
    };
    Ok(Line::Op(op))
}

/// Parse a header block (`NATS/1.0\r\nKey: Value\r\n...\r\n`).
pub fn parse_headers(block: &[u8]) -> Option<Vec<(&str, &str)>> {
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("NATS/1.0") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim(), value.trim()));
    }
    Some(headers)
}

/// Encode a header block, with an optional status (`503`).
pub fn encode_headers<'h>(
    status: Option<&str>,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> Vec<u8> {
    let mut out = match status {
        Some(status) => format!("NATS/1.0 {status}\r\n"),
        None => "NATS/1.0\r\n".to_string(),
    };
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Append a `MSG` (no headers) or `HMSG` (with a header block).
pub fn put_message(
    out: &mut Vec<u8>,
    subject: &str,
    sid: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    // Runs for every delivery: pieces appended directly, no `format!`.
    out.extend_from_slice(if headers.is_some() { b"HMSG " } else { b"MSG " });
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(sid.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    out.push(b' ');
    if let Some(headers) = headers {
        put_decimal(out, headers.len() as u64);
        out.push(b' ');
        put_decimal(out, (headers.len() + payload.len()) as u64);
    } else {
        put_decimal(out, payload.len() as u64);
    }
    out.extend_from_slice(b"\r\n");
    if let Some(headers) = headers {
        out.extend_from_slice(headers);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_written_whole() {
        let mut out = Vec::new();
        put_message(&mut out, "a.b", "7", Some("_INBOX.1"), None, b"hello");
        put_message(&mut out, "c", "1", None, Some(b"NATS/1.0\r\n\r\n"), b"");
        put_decimal(&mut out, 0);
        assert_eq!(out, b"MSG a.b 7 _INBOX.1 5\r\nhello\r\nHMSG c 1 12 12\r\nNATS/1.0\r\n\r\n\r\n0");
    }

    /// Frame lengths, and what the next needs.
    fn scan(buffer: &[u8], max_payload: usize) -> (Vec<usize>, Option<u32>) {
        let mut frames = Frames::new(buffer, max_payload);
        let mut lengths = Vec::new();
        let mut at = 0;
        while frames.next().is_some() {
            lengths.push(frames.handled() - at);
            at = frames.handled();
        }
        (lengths, frames.needs())
    }

    /// The operation at the start of `frame`, which is all of it when read.
    fn parse(frame: &[u8], max_payload: usize) -> Result<Op<'_>, ParseError> {
        let mut frames = Frames::new(frame, max_payload);
        let op = frames.next().expect("a complete operation");
        if op.is_ok() {
            assert_eq!(frames.handled(), frame.len(), "a read operation is the whole frame");
        }
        op
    }

    #[test]
    fn line_ends_and_ascii_are_found_at_every_offset() {
        for len in 0..40 {
            for newline in (0..len).map(Some).chain([None]) {
                for high in (0..len).map(Some).chain([None]) {
                    let mut window = vec![b'a'; len];
                    if let Some(at) = high {
                        window[at] = 0xC3;
                    }
                    if let Some(at) = newline {
                        window[at] = b'\n';
                    }
                    let end = window.iter().position(|&b| b == b'\n');
                    let ascii = window[..end.unwrap_or(len)].is_ascii();
                    assert_eq!(find_line_end(&window), (end, ascii), "{window:?}");
                }
            }
        }
        // A second LF, and bytes that borrow in the word arithmetic.
        assert_eq!(find_line_end(b"\x0b\n\n\x01\x00\x80abcdefgh"), (Some(1), true));
        assert_eq!(find_line_end(b"\x00\x01\x0b\x0a"), (Some(3), true));
    }

    #[test]
    fn operation_names_match_whole_and_in_any_case() {
        for name in ["PUB", "HPUB", "SUB", "UNSUB", "PING", "PONG", "CONNECT"] {
            assert_eq!(op_name(name.as_bytes()), name.as_bytes());
            assert_eq!(op_name(name.to_ascii_lowercase().as_bytes()), name.as_bytes());
        }
        assert_eq!(op_name(b"pUb"), b"PUB");
        for near in
            ["PUX", "XUB", "SUBS", "HPUX", "PINGS", "PANG", "UNSUX", "CONNEC", "XONNECT", "P\u{dc}B", ""]
        {
            assert_eq!(op_name(near.as_bytes()), b"", "{near}");
        }
    }

    #[test]
    fn frames_are_lines_and_payloads() {
        let buffer = b"PING\r\nPUB a 5\r\nhello\r\nSUB a 1\r\nPUB b 10\r\nhal";
        let (frames, next) = scan(buffer, 1024);
        assert_eq!(frames, vec![6, 16, 9]);
        assert_eq!(next, Some(22), "PUB b 10 needs its line, 10 bytes and CRLF");
        let (frames, next) = scan(b"PUB a 99999\r\n", 1024);
        assert_eq!((frames, next), (vec![13], None), "oversized payload: the line alone");
        let (frames, next) = scan(b"HPUB a 3 2\r\nhi\r\nPING\r\n", 1024);
        assert_eq!((frames, next), (vec![12, 4, 6], None), "a refused line alone, then what follows");
        let (frames, _) = scan(&[b'x'; MAX_CONTROL_LINE + 10], 1024);
        assert_eq!(
            frames[0],
            MAX_CONTROL_LINE + 1,
            "an over-long line: its first bytes, which the parser refuses"
        );
    }

    #[test]
    fn parse_operations() {
        assert_eq!(parse(b"ping\r\n", 10), Ok(Op::Ping));
        assert_eq!(
            parse(b"PUB a.b _INBOX.1 2\r\nhi\r\n", 10),
            Ok(Op::Pub { subject: "a.b", reply: Some("_INBOX.1"), headers: None, payload: b"hi" })
        );
        assert_eq!(
            parse(b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", 100),
            Ok(Op::Pub { subject: "a", reply: None, headers: Some(b"NATS/1.0\r\n\r\n"), payload: b"hi" })
        );
        assert_eq!(
            parse(b"HPUB a 0 2\r\nhi\r\n", 10),
            Ok(Op::Pub { subject: "a", reply: None, headers: None, payload: b"hi" }),
            "an empty header block is none"
        );
        assert_eq!(parse(b"SUB a.* q 7\r\n", 10), Ok(Op::Sub { subject: "a.*", queue: Some("q"), sid: "7" }));
        assert_eq!(parse(b"UNSUB 7 3\r\n", 10), Ok(Op::Unsub { sid: "7", max: Some(3) }));
        assert_eq!(parse(b"PUB a 20\r\n", 10), Err(ParseError::PayloadTooLarge));
        assert_eq!(parse(b"HPUB a 2 20\r\n", 10), Err(ParseError::PayloadTooLarge));
        assert_eq!(
            parse(b"HPUB a 3 2\r\nhi\r\n", 10),
            Err(ParseError::BadArguments),
            "headers beyond the total"
        );
        assert_eq!(parse(b"PUB a 2\r\nhiX\r\n", 10), Err(ParseError::UnknownOperation));
        assert_eq!(parse(b"FOO\r\n", 10), Err(ParseError::UnknownOperation));
        assert_eq!(parse(b"SUB\r\n", 10), Err(ParseError::UnknownOperation), "bare");
        assert_eq!(parse(b"unsub\r\n", 10), Err(ParseError::UnknownOperation), "bare");
        assert_eq!(parse(b"SUB \r\n", 10), Err(ParseError::BadArguments));
        assert_eq!(parse(b"PUB foo\r\n", 10), Err(ParseError::BadArguments));
        assert_eq!(parse(b"PUB a\xff 1\r\nx\r\n", 10), Err(ParseError::UnknownOperation), "not UTF-8");
        assert_eq!(
            parse("PUB é.ü 1\r\nx\r\n".as_bytes(), 10),
            Ok(Op::Pub { subject: "é.ü", reply: None, headers: None, payload: b"x" }),
            "UTF-8 beyond ASCII"
        );
    }

    #[test]
    fn arguments_split_at_spaces_and_tabs() {
        let spaced = Op::Sub { subject: "a", queue: Some("q"), sid: "7" };
        assert_eq!(parse(b"SUB \t a\t\tq  7 \r\n", 10), Ok(spaced));
        assert_eq!(parse(b"PUB\ta 2\r\nhi\r\n", 10).map(|op| matches!(op, Op::Pub { .. })), Ok(true));
        assert_eq!(parse(b"SUB a b c d e\r\n", 10), Err(ParseError::BadArguments), "five words");
        assert_eq!(parse(b"PUB a +2\r\nhi\r\n", 10), Err(ParseError::BadArguments), "digits only");
        assert_eq!(parse(b"PUB a 99999999999999999999\r\n", 10), Err(ParseError::BadArguments));
        assert_eq!(scan(b"pub a b 12 \r\n", 100), (vec![], Some(27)), "a reply, then the size");
        assert_eq!(scan(b"SUB a 12\r\n", 100), (vec![10], None), "a sid, not a size");
    }

    #[test]
    fn headers_round_trip() {
        let block = encode_headers(None, [("A", "1"), ("B", "x y")]);
        assert_eq!(block, b"NATS/1.0\r\nA: 1\r\nB: x y\r\n\r\n");
        assert_eq!(parse_headers(&block).unwrap(), vec![("A", "1"), ("B", "x y")]);
        assert_eq!(encode_headers(Some("503"), []), b"NATS/1.0 503\r\n\r\n");
    }
}
