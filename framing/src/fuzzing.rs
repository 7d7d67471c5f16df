//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: the first
//! bytes of the input choose a framing rule, the rest is the stream, which
//! is split frame by frame while the invariants are checked.

use crate::Framing;

/// Frame limit used while fuzzing, small so limits are reached.
const MAX_FRAME: usize = 4096;

/// Split `data` with a framing rule chosen by its first four bytes.
pub fn stream(data: &[u8]) {
    let [choice, a, b, c, rest @ ..] = data else { return };
    let framing = match choice % 3 {
        0 => Framing::delimiter(&[*a, *b][..usize::from(c % 2) + 1]),
        1 => {
            Framing::length_prefix(a % 66, [1, 2, 4, 8][usize::from(b % 4)], c & 1 == 1, i32::from(*c as i8))
        }
        _ => Framing::varint(a % 66, b % 9),
    };
    let Ok(framing) = framing else { return };
    let mut buffer = rest;
    while !buffer.is_empty() {
        match framing.next_frame(buffer, MAX_FRAME) {
            Ok(Some(len)) => {
                assert!(len > 0 && len <= buffer.len() && len <= MAX_FRAME, "frame of {len} bytes");
                buffer = &buffer[len..];
            }
            Ok(None) => {
                assert!(buffer.len() < MAX_FRAME || !matches!(framing, Framing::Delimiter(_)));
                return;
            }
            Err(_) => return,
        }
    }
}
