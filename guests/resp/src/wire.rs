//! RESP wire format: finding command frames, decoding them, encoding replies
//! in RESP2 or RESP3.
//!
//! Clients send commands as arrays of bulk strings (`*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n`)
//! or as inline lines (`PING\r\n`). Lengths are checked against Redis's
//! limits before anything is buffered.

use sandport_guest::{parse_decimal, put_decimal};

/// Longest inline command line (Redis `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one command (Redis allows 1024*1024).
pub const MAX_ARGS: usize = 1024 * 1024;

/// A framing error, with the text Redis sends before closing.
pub type FrameError = String;

/// The complete commands at the start of a buffer, one at a time, each
/// split into its arguments in the same pass that finds where it ends. When
/// none is left, [`Frames::needs`] tells what the next one needs, or
/// [`Frames::error`] why the stream cannot go on.
pub struct Frames<'a> {
    buffer: &'a [u8],
    max_bulk: usize,
    handled: usize,
    needs: Option<u32>,
    error: Option<FrameError>,
}

impl<'a> Frames<'a> {
    pub fn new(buffer: &'a [u8], max_bulk: usize) -> Self {
        Self { buffer, max_bulk, handled: 0, needs: None, error: None }
    }

    /// The next complete command's arguments, into `args` (cleared first,
    /// so one holder serves a batch); false once none is left.
    pub fn next_command(&mut self, args: &mut Args<'a>) -> bool {
        args.clear();
        let rest = &self.buffer[self.handled..];
        if rest.is_empty() || self.error.is_some() {
            return false;
        }
        match command(rest, self.max_bulk, args) {
            Ok(Length::Complete(n)) => {
                self.handled += n;
                true
            }
            Ok(Length::Needs(n)) => {
                self.needs = n.map(|n| n as u32);
                false
            }
            Err(error) => {
                self.error = Some(error);
                false
            }
        }
    }

    /// Bytes of the commands returned so far.
    pub fn handled(&self) -> usize {
        self.handled
    }

    /// Once no command is left: the next one's size so far, if known.
    pub fn needs(&self) -> Option<u32> {
        self.needs
    }

    /// Once no command is left: the framing error that stopped them.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// One command's arguments: slices of the buffer, or, for an inline
/// command with quotes, their unescaped copies.
#[derive(Default)]
pub struct Args<'a> {
    borrowed: Vec<&'a [u8]>,
    unquoted: Vec<Vec<u8>>,
}

impl<'a> Args<'a> {
    fn clear(&mut self) {
        self.borrowed.clear();
        self.unquoted.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.borrowed.is_empty() && self.unquoted.is_empty()
    }

    /// Whether the arguments are unescaped copies rather than slices of
    /// the buffer.
    pub fn is_quoted(&self) -> bool {
        !self.unquoted.is_empty()
    }

    /// Run `f` on the arguments as slices.
    pub fn with<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        if self.unquoted.is_empty() {
            f(&self.borrowed)
        } else {
            let unquoted: Vec<&[u8]> = self.unquoted.iter().map(Vec::as_slice).collect();
            f(&unquoted)
        }
    }
}

enum Length {
    Complete(usize),
    /// More bytes needed; the total if known.
    Needs(Option<usize>),
}

/// Read a `\r\n`-terminated header line at `at`; returns (content, next index).
fn line(buffer: &[u8], at: usize, limit: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let window = &buffer[at..buffer.len().min(at + limit + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], at + end + 2))),
        None if window.len() >= limit + 2 => Err("Protocol error: too big inline request".into()),
        None => Ok(None),
    }
}

/// A decimal integer as Redis reads one (`string2ll`): an optional `-`, then
/// `0` alone or digits without a leading zero, within an i64. So `+1`,
/// `01` and `-0` are not numbers, where `str::parse` would take them. Every
/// bulk header, multibulk count and integer argument goes through here.
pub fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // The usual case, up to 18 digits, fits an i64 without checked arithmetic.
    if digits.len() <= 18 {
        let value = i64::try_from(parse_decimal(digits)?).ok()?;
        return Some(if negative { -value } else { value });
    }
    let mut value: i64 = 0;
    for &byte in digits {
        let digit = i64::from(byte.checked_sub(b'0').filter(|d| *d <= 9)?);
        value = value.checked_mul(10)?;
        value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    Some(value)
}

/// The number on the header line at `at` (the `3` of `*3\r\n`, the `64` of
/// `$64\r\n`) and where the next line starts; None while the line is
/// incomplete, `invalid` when it is not a number.
fn header_number(buffer: &[u8], at: usize, invalid: &str) -> Result<Option<(i64, usize)>, FrameError> {
    if let Some(found) = plain_header(buffer, at) {
        return Ok(Some(found));
    }
    let Some((text, next)) = line(buffer, at, 32)? else { return Ok(None) };
    Ok(Some((number(text).ok_or(invalid)?, next)))
}

/// The common header, up to nine digits and CRLF, read in one pass: with
/// one header line per command and one per argument this is the scanner's
/// busiest loop, and `line` then `number` walk the digits twice. Anything
/// else (a sign, a leading zero, no digits, an incomplete line) is None and
/// left to them.
fn plain_header(buffer: &[u8], at: usize) -> Option<(i64, usize)> {
    let (mut value, mut end) = (0, at);
    while let Some(digit) = buffer.get(end).map(|b| b.wrapping_sub(b'0')).filter(|d| *d <= 9) {
        value = value * 10 + i64::from(digit);
        end += 1;
        if end - at > 9 {
            return None;
        }
    }
    let leading_zero = end - at > 1 && buffer[at] == b'0';
    (end > at && !leading_zero && buffer.get(end..end + 2) == Some(b"\r\n")).then_some((value, end + 2))
}

/// Where the command at the start of `buffer` ends, pushing its arguments
/// onto `args` on the way.
fn command<'a>(buffer: &'a [u8], max_bulk: usize, args: &mut Args<'a>) -> Result<Length, FrameError> {
    if buffer[0] != b'*' {
        // Inline command: one line (a bare `\n` ends it too, as in Redis).
        return match buffer.iter().take(MAX_INLINE + 1).position(|b| *b == b'\n') {
            Some(end) => {
                let text = buffer[..end].strip_suffix(b"\r").unwrap_or(&buffer[..end]);
                if text.iter().any(|b| matches!(b, b'"' | b'\'')) {
                    args.unquoted = split_quoted(text)?;
                } else {
                    args.borrowed.extend(text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()));
                }
                Ok(Length::Complete(end + 1))
            }
            None if buffer.len() > MAX_INLINE => Err("Protocol error: too big inline request".into()),
            None => Ok(Length::Needs(None)),
        };
    }
    let Some((count, mut at)) = header_number(buffer, 1, "Protocol error: invalid multibulk length")? else {
        return Ok(Length::Needs(None));
    };
    if count > MAX_ARGS as i64 {
        return Err("Protocol error: invalid multibulk length".into());
    }
    for _ in 0..count.max(0) {
        let Some(&kind) = buffer.get(at) else { return Ok(Length::Needs(None)) };
        if kind != b'$' {
            return Err(format!("Protocol error: expected '$', got '{}'", kind as char));
        }
        const INVALID_BULK: &str = "Protocol error: invalid bulk length";
        let Some((len, data)) = header_number(buffer, at + 1, INVALID_BULK)? else {
            return Ok(Length::Needs(None));
        };
        let len = Some(len).filter(|n| *n >= 0 && *n as usize <= max_bulk).ok_or(INVALID_BULK)? as usize;
        let end = data + len + 2;
        if end > buffer.len() {
            // Not the whole command's size yet, but at least this much.
            return Ok(Length::Needs(Some(end)));
        }
        if &buffer[data + len..end] != b"\r\n" {
            return Err("Protocol error: invalid bulk length".into());
        }
        args.borrowed.push(&buffer[data..data + len]);
        at = end;
    }
    Ok(Length::Complete(at))
}

/// Split an inline line with quotes as Redis does (`sdssplitargs`): words
/// separated by whitespace; inside double quotes `\n`, `\r`, `\t`, `\b`,
/// `\a` and `\xHH` are escapes and a backslash takes the next byte as it
/// is; inside single quotes only `\'` is. A quote may start inside a word,
/// but a closing one must end it. Redis reads the line as a C string, so a
/// NUL byte ends it.
fn split_quoted(line: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    const UNBALANCED: &str = "Protocol error: unbalanced quotes in request";
    // C's isspace: what is skipped between words and may follow a closing quote.
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    // What ends an unquoted word.
    let ends_word = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(|&b| is_space(b)) {
            at += 1;
        }
        if at >= line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quote = None;
        while let Some(&byte) = line.get(at) {
            match quote {
                None if ends_word(byte) => break,
                None if matches!(byte, b'"' | b'\'') => quote = Some(byte),
                None => word.push(byte),
                Some(q) if byte == q => {
                    if line.get(at + 1).is_some_and(|&next| !is_space(next)) {
                        return Err(UNBALANCED.into());
                    }
                    quote = None;
                    at += 1;
                    break;
                }
                Some(b'"') if byte == b'\\' && at + 1 < line.len() => {
                    let hex = line.get(at + 2..at + 4).filter(|_| line[at + 1] == b'x');
                    if let Some(decoded) = hex.and_then(|h| hex_byte(h[0], h[1])) {
                        word.push(decoded);
                        at += 3;
                    } else {
                        at += 1;
                        word.push(match line[at] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                }
                Some(b'\'') if byte == b'\\' && line.get(at + 1) == Some(&b'\'') => {
                    word.push(b'\'');
                    at += 1;
                }
                Some(_) => word.push(byte),
            }
            at += 1;
        }
        if quote.is_some() {
            return Err(UNBALANCED.into());
        }
        words.push(word);
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// Reply encoder for one connection's protocol version.
#[derive(Clone, Copy)]
pub struct Encoder {
    pub resp3: bool,
}

impl Encoder {
    pub fn simple(&self, out: &mut Vec<u8>, text: &str) {
        put_line(out, b'+', text.as_bytes());
    }

    pub fn error(&self, out: &mut Vec<u8>, text: &str) {
        put_line(out, b'-', text.as_bytes());
    }

    pub fn integer(&self, out: &mut Vec<u8>, n: i64) {
        out.push(b':');
        if n < 0 {
            out.push(b'-');
        }
        put_decimal(out, n.unsigned_abs());
        out.extend_from_slice(b"\r\n");
    }

    pub fn bulk(&self, out: &mut Vec<u8>, data: &[u8]) {
        header(out, b'$', data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }

    pub fn null(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    pub fn array(&self, out: &mut Vec<u8>, len: usize) {
        header(out, b'*', len);
    }

    /// A map header (RESP3) or a flat array of twice the length (RESP2).
    pub fn map(&self, out: &mut Vec<u8>, pairs: usize) {
        if self.resp3 {
            header(out, b'%', pairs);
        } else {
            self.array(out, pairs * 2);
        }
    }

    /// A push header (RESP3) or an array (RESP2), for pub/sub messages.
    pub fn push(&self, out: &mut Vec<u8>, len: usize) {
        if self.resp3 {
            header(out, b'>', len);
        } else {
            self.array(out, len);
        }
    }
}

// Replies are written piece by piece: they are on every command's path,
// and `format!` costs an allocation and the formatting machinery each time.

/// `kind`, `text`, CRLF.
fn put_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// `kind`, `n` in decimal, CRLF: the header of a bulk string or aggregate.
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    put_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Command lengths and what the next needs, or the framing error.
    fn scan(buffer: &[u8], max_bulk: usize) -> Result<(Vec<usize>, Option<u32>), FrameError> {
        let mut frames = Frames::new(buffer, max_bulk);
        let (mut lengths, mut args) = (Vec::new(), Args::default());
        while frames.next_command(&mut args) {
            lengths.push(frames.handled() - lengths.iter().sum::<usize>());
        }
        frames.error().map_or(Ok((lengths, frames.needs())), |text| Err(text.to_string()))
    }

    /// The arguments of the first command in `buffer`.
    fn arguments(buffer: &[u8]) -> Vec<Vec<u8>> {
        let mut args = Args::default();
        assert!(Frames::new(buffer, 1 << 20).next_command(&mut args), "a whole command");
        args.with(|args| args.iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn scan_multibulk_and_inline() {
        let buffer = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhel";
        let (frames, next) = scan(buffer, 1 << 20).unwrap();
        assert_eq!(frames, vec![14, 6]);
        assert_eq!(next, Some(25), "the ECHO command needs its 5-byte argument and CRLF");
        assert_eq!(arguments(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"), [b"ECHO".to_vec(), b"hi".to_vec()]);
        assert_eq!(arguments(b"SET  k v\r\n"), [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
    }

    #[test]
    fn inline_quotes_split_like_redis() {
        let split = |line: &[u8]| {
            split_quoted(line).map(|words| words.iter().map(|w| w.to_vec()).collect::<Vec<_>>())
        };
        let ok = |line: &[u8], expected: &[&[u8]]| {
            assert_eq!(
                split(line),
                Ok(expected.iter().map(|w| w.to_vec()).collect()),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        };
        ok(b"ECHO \"hello world\"", &[b"ECHO", b"hello world"]);
        ok(b"ECHO 'a b'", &[b"ECHO", b"a b"]);
        ok(b"ECHO \"a\\x41\\n\\q\\xZZ\"", &[b"ECHO", b"aA\nqxZZ"]);
        ok(b"ECHO 'it\\'s' \"\"", &[b"ECHO", b"it's", b""]);
        ok(b"SET k\"ey\" v", &[b"SET", b"key", b"v"]);
        ok(b"  a\x0bb \"c\"\x0b", &[b"a\x0bb", b"c"]);
        ok(b"ECHO \"x\" tail\0ignored \"", &[b"ECHO", b"x", b"tail"]);
        for bad in [&b"ECHO \"open"[..], b"ECHO 'open", b"ECHO \"a\"b", b"ECHO 'a'b", b"ECHO \"ends in \\"] {
            assert!(split(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut args = Args::default();
        assert!(Frames::new(b"ECHO \"a b\"\r\nPING\r\n", 1 << 20).next_command(&mut args));
        assert!(args.is_quoted());
        args.with(|a| assert_eq!(a, [&b"ECHO"[..], b"a b"]));
        let error = scan(b"PING\r\nECHO \"a\r\nPING\r\n", 1 << 20).unwrap_err();
        assert_eq!(error, "Protocol error: unbalanced quotes in request");
    }

    #[test]
    fn numbers_read_like_redis() {
        let long = ["999999999999999999", "-999999999999999999", "1000000000000000000", "10"];
        for text in ["0", "42", "-1", "9223372036854775807", "-9223372036854775808"].into_iter().chain(long) {
            assert_eq!(number(text.as_bytes()), text.parse().ok(), "{text}");
        }
        // redis-server answers each of these with an integer or protocol error.
        let signs_and_zeros = ["", "-", "+", "+7", "07", "00", "-0", "-01"];
        let not_digits = ["1a", " 1", "1 ", "--1", "1.0", "12345678901234567/", "1234567890123456789/"];
        let out_of_range = ["9223372036854775808", "-9223372036854775809", "99999999999999999999"];
        for text in signs_and_zeros.into_iter().chain(not_digits).chain(out_of_range) {
            assert_eq!(number(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn header_numbers_read_like_line_then_number() {
        let slow = |buffer: &[u8]| -> Result<Option<(i64, usize)>, FrameError> {
            let Some((text, next)) = line(buffer, 0, 32)? else { return Ok(None) };
            Ok(Some((number(text).ok_or("bad")?, next)))
        };
        let cases: [&[u8]; 20] = [
            b"3\r\n",
            b"64\r\n$",
            b"007\r\n",
            b"0\r\n",
            b"123456789\r\n",
            b"1234567890\r\n",
            b"99999999999999999999\r\n",
            b"-1\r\n",
            b"+5\r\n",
            b"07\r\n",
            b"-0\r\n",
            b"00\r\n",
            b"3",
            b"3\r",
            b"3\n",
            b"3x\r\n",
            b"\r\n",
            b"",
            b"1 \r\n",
            b"12345678901234567890123456789012345\r\n",
        ];
        for case in cases {
            assert_eq!(header_number(case, 0, "bad"), slow(case), "{}", String::from_utf8_lossy(case));
        }
        // The fast path itself takes the plain ones.
        assert_eq!(plain_header(b"*3\r\n", 1), Some((3, 4)));
        assert_eq!(plain_header(b"123456789\r\n", 0), Some((123_456_789, 11)));
        assert_eq!(plain_header(b"1234567890\r\n", 0), None);
        assert_eq!(plain_header(b"0\r\n", 0), Some((0, 3)));
        assert_eq!(plain_header(b"07\r\n", 0), None);
    }

    #[test]
    fn replies_are_encoded() {
        let enc = Encoder { resp3: true };
        let mut out = Vec::new();
        enc.simple(&mut out, "PONG");
        enc.error(&mut out, "ERR x");
        enc.integer(&mut out, -42);
        enc.integer(&mut out, i64::MIN);
        enc.bulk(&mut out, b"hi");
        enc.array(&mut out, 0);
        enc.map(&mut out, 12);
        enc.push(&mut out, 3);
        let expected = "+PONG\r\n-ERR x\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n*0\r\n%12\r\n>3\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn huge_or_malformed_lengths_are_refused_up_front() {
        assert!(scan(b"*1\r\n$999999999\r\n", 1 << 20).unwrap_err().contains("invalid bulk length"));
        assert!(scan(b"*99999999999\r\n", 1 << 20).unwrap_err().contains("invalid multibulk length"));
        assert!(scan(b"*1\r\n*1\r\n", 1 << 20).unwrap_err().contains("expected '$'"));
        assert!(scan(&[b'a'; MAX_INLINE + 2], 1 << 20).unwrap_err().contains("too big inline"));
    }
}
