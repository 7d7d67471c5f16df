//! Native framers: split an inbound byte stream into whole frames.
//!
//! A protocol guest declares its framing; the sandport host applies it with
//! this crate, so only complete frames cross into WebAssembly. The size limit
//! is enforced from the header: a frame announcing more than the maximum is
//! refused before its body is buffered. Pure code with no dependencies on the
//! runtime, so it can be fuzzed natively (see `fuzz/`).

#[doc(hidden)]
pub mod fuzzing;

/// Longest delimiter a guest may declare.
pub const MAX_DELIMITER: usize = 16;

/// A validated framing rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Frames end with (and include) this sequence.
    Delimiter(Vec<u8>),
    /// Fixed-width length: total = offset + width + value + adjust.
    LengthPrefix { offset: usize, width: usize, big_endian: bool, adjust: i64 },
    /// Base-128 varint length: total = offset + field bytes + value.
    Varint { offset: usize, max_bytes: usize },
    /// The guest finds frames itself (`on-stream`).
    Guest,
}

/// A framing rule or frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: u64, max: usize },
    #[error("length field longer than {0} bytes")]
    VarintTooLong(usize),
    #[error("length field gives a frame shorter than its header")]
    TooShort,
    #[error("invalid framing declared by the guest: {0}")]
    BadDeclaration(String),
    #[error("{0}")]
    Rejected(String),
}

impl Framing {
    /// Frames ending with `delimiter` (1 to 16 bytes), which stays in the frame.
    pub fn delimiter(delimiter: &[u8]) -> Result<Self, FramingError> {
        if delimiter.is_empty() || delimiter.len() > MAX_DELIMITER {
            return Err(FramingError::BadDeclaration("delimiter must be 1 to 16 bytes".into()));
        }
        Ok(Self::Delimiter(delimiter.to_vec()))
    }

    /// A fixed-width length field (1, 2, 4 or 8 bytes) after `offset` bytes.
    pub fn length_prefix(offset: u8, width: u8, big_endian: bool, adjust: i32) -> Result<Self, FramingError> {
        if ![1, 2, 4, 8].contains(&width) {
            return Err(FramingError::BadDeclaration("length-prefix width must be 1, 2, 4 or 8".into()));
        }
        if offset > 64 {
            return Err(FramingError::BadDeclaration("length-prefix offset above 64".into()));
        }
        Ok(Self::LengthPrefix {
            offset: offset.into(),
            width: width.into(),
            big_endian,
            adjust: adjust.into(),
        })
    }

    /// A base-128 varint length of at most `max_bytes` (1 to 8) after `offset` bytes.
    pub fn varint(offset: u8, max_bytes: u8) -> Result<Self, FramingError> {
        if max_bytes == 0 || max_bytes > 8 {
            return Err(FramingError::BadDeclaration("varint-length max-bytes must be 1 to 8".into()));
        }
        if offset > 64 {
            return Err(FramingError::BadDeclaration("varint-length offset above 64".into()));
        }
        Ok(Self::Varint { offset: offset.into(), max_bytes: max_bytes.into() })
    }

    /// Length of the complete frame at the start of `buf`, `None` if more
    /// bytes are needed. Not for [`Framing::Guest`].
    pub fn next_frame(&self, buf: &[u8], max: usize) -> Result<Option<usize>, FramingError> {
        match self {
            Self::Delimiter(delimiter) => {
                let window = &buf[..buf.len().min(max)];
                match find(window, delimiter) {
                    Some(at) => Ok(Some(at + delimiter.len())),
                    None if buf.len() >= max => Err(FramingError::TooLarge { size: buf.len() as u64, max }),
                    None => Ok(None),
                }
            }
            Self::LengthPrefix { offset, width, big_endian, adjust } => {
                let header = offset + width;
                let Some(field) = buf.get(*offset..header) else {
                    return Ok(None);
                };
                let push = |acc: u64, byte: &u8| (acc << 8) | u64::from(*byte);
                let value =
                    if *big_endian { field.iter().fold(0, push) } else { field.iter().rev().fold(0, push) };
                let total = (header as i128) + i128::from(value) + i128::from(*adjust);
                if total < header as i128 {
                    return Err(FramingError::TooShort);
                }
                // An 8-byte field can exceed u64 once the header is added.
                complete_if(buf, u64::try_from(total).unwrap_or(u64::MAX), max)
            }
            Self::Varint { offset, max_bytes } => {
                let mut value = 0u64;
                for i in 0..*max_bytes {
                    let Some(&byte) = buf.get(offset + i) else {
                        return Ok(None);
                    };
                    value |= u64::from(byte & 0x7f) << (7 * i);
                    if byte & 0x80 == 0 {
                        return complete_if(buf, (offset + i + 1) as u64 + value, max);
                    }
                }
                Err(FramingError::VarintTooLong(*max_bytes))
            }
            // The guest splits its own frames; nothing is complete here.
            Self::Guest => Ok(None),
        }
    }
}

fn complete_if(buf: &[u8], total: u64, max: usize) -> Result<Option<usize>, FramingError> {
    if total > max as u64 {
        return Err(FramingError::TooLarge { size: total, max });
    }
    Ok((buf.len() as u64 >= total).then_some(total as usize))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return haystack.iter().position(|b| *b == needle[0]);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_frames_include_the_delimiter() {
        let f = Framing::Delimiter(b"\r\n".to_vec());
        assert_eq!(f.next_frame(b"PING\r\nPO", 100), Ok(Some(6)));
        assert_eq!(f.next_frame(b"PING\r", 100), Ok(None));
        assert!(matches!(f.next_frame(&[b'a'; 100], 100), Err(FramingError::TooLarge { .. })));
    }

    #[test]
    fn mqtt_varint() {
        let f = Framing::Varint { offset: 1, max_bytes: 4 };
        assert_eq!(f.next_frame(&[0xc0, 0x00], 100), Ok(Some(2)));
        assert_eq!(f.next_frame(&[0x30, 0x03, 1, 2], 100), Ok(None));
        assert_eq!(f.next_frame(&[0x30, 0x03, 1, 2, 3], 100), Ok(Some(5)));
        // 321 = 0xc1 0x02 -> refused from the header alone.
        assert!(matches!(
            f.next_frame(&[0x30, 0xc1, 0x02], 100),
            Err(FramingError::TooLarge { size: 324, .. })
        ));
        assert_eq!(
            f.next_frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f], usize::MAX),
            Err(FramingError::VarintTooLong(4))
        );
        assert_eq!(f.next_frame(&[0x30, 0x80], 100), Ok(None));
    }

    #[test]
    fn length_prefix_both_orders() {
        let be = Framing::LengthPrefix { offset: 0, width: 2, big_endian: true, adjust: 0 };
        assert_eq!(be.next_frame(&[0, 3, 1, 2, 3, 9], 100), Ok(Some(5)));
        let le = Framing::LengthPrefix { offset: 1, width: 4, big_endian: false, adjust: -5 };
        // total = 1 + 4 + 7 - 5 = 7
        assert_eq!(le.next_frame(&[9, 7, 0, 0, 0, 1, 2], 100), Ok(Some(7)));
        let lying = Framing::LengthPrefix { offset: 0, width: 1, big_endian: true, adjust: -10 };
        assert_eq!(lying.next_frame(&[0], 100), Err(FramingError::TooShort));
        let huge = Framing::LengthPrefix { offset: 0, width: 8, big_endian: true, adjust: 0 };
        assert!(matches!(huge.next_frame(&[0xff; 8], 1000), Err(FramingError::TooLarge { .. })));
    }
}
