//! Reading packed deliveries in place: the guest's side of the layout.

use core::str;

use crate::{
    Delivery, FROM_RETAINED, HAS_CONTENT_TYPE, HAS_CORRELATION, HAS_EXPIRY, HAS_ID, HAS_REPLY_TO, Headers,
    KNOWN_FLAGS, Message, QOS_MASK, QOS_SHIFT, Qos, REDELIVERED, RETAIN, UTF8_PAYLOAD,
};

/// The deliveries of a packed batch, read in place.
///
/// The host packs only well-formed batches. Should a batch be malformed (a
/// length past the end, a string that is not UTF-8, an unknown flag, a
/// value for a field its flag says is absent), the iteration ends at the
/// delivery that is, and [`Deliveries::malformed`] says so. So every
/// delivery read packs back to exactly the bytes it was read from.
#[derive(Debug, Clone)]
pub struct Deliveries<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> Deliveries<'a> {
    /// Read the packed `batch`.
    pub fn new(batch: &'a [u8]) -> Self {
        Deliveries { rest: batch, malformed: false }
    }

    /// Whether the iteration stopped at a malformed delivery.
    pub fn malformed(&self) -> bool {
        self.malformed
    }

    /// The bytes not read yet: empty once every delivery was read, the
    /// malformed delivery and what follows it otherwise.
    pub fn unread(&self) -> &'a [u8] {
        self.rest
    }

    fn read(&mut self) -> Option<Delivery<'a>> {
        let mut reader = Reader(self.rest);
        let subscription = reader.u32()?;
        let flags = reader.u32()?;
        if flags & !KNOWN_FLAGS != 0 {
            return None;
        }
        let id = reader.u64()?;
        let expiry_secs = reader.u32()?;
        let [topic, payload, reply_to, correlation, content_type, header_count] =
            [reader.u32()?, reader.u32()?, reader.u32()?, reader.u32()?, reader.u32()?, reader.u32()?];
        let topic = reader.str(topic)?;
        let payload = reader.bytes(payload)?;
        let reply_to = reader.str(reply_to)?;
        let correlation = reader.bytes(correlation)?;
        let content_type = reader.str(content_type)?;
        let headers_start = reader.0;
        for _ in 0..header_count {
            reader.sized_str()?;
            reader.sized_str()?;
        }
        let packed = &headers_start[..headers_start.len() - reader.0.len()];
        let qos = match (flags & QOS_MASK) >> QOS_SHIFT {
            0 => Qos::AtMostOnce,
            1 => Qos::AtLeastOnce,
            2 => Qos::ExactlyOnce,
            _ => return None,
        };
        let set = |flag: u32| flags & flag != 0;
        // Absent fields are packed as zeros.
        let absent_but_given = (!set(HAS_ID) && id != 0)
            || (!set(HAS_EXPIRY) && expiry_secs != 0)
            || (!set(HAS_REPLY_TO) && !reply_to.is_empty())
            || (!set(HAS_CORRELATION) && !correlation.is_empty())
            || (!set(HAS_CONTENT_TYPE) && !content_type.is_empty());
        if absent_but_given {
            return None;
        }
        self.rest = reader.0;
        Some(Delivery {
            subscription,
            id: set(HAS_ID).then_some(id),
            message: Message {
                topic,
                payload,
                headers: Headers { count: header_count, packed },
                reply_to: set(HAS_REPLY_TO).then_some(reply_to),
                correlation: set(HAS_CORRELATION).then_some(correlation),
                content_type: set(HAS_CONTENT_TYPE).then_some(content_type),
                utf8_payload: set(UTF8_PAYLOAD),
                expiry_secs: set(HAS_EXPIRY).then_some(expiry_secs),
                retain: set(RETAIN),
                qos,
            },
            from_retained: set(FROM_RETAINED),
            redelivered: set(REDELIVERED),
        })
    }
}

impl<'a> Iterator for Deliveries<'a> {
    type Item = Delivery<'a>;

    fn next(&mut self) -> Option<Delivery<'a>> {
        if self.rest.is_empty() || self.malformed {
            return None;
        }
        let delivery = self.read();
        if delivery.is_none() {
            self.malformed = true;
        }
        delivery
    }
}

/// Reads fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, len: u32) -> Option<&'a [u8]> {
        let (bytes, rest) = self.0.split_at_checked(len as usize)?;
        self.0 = rest;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (bytes, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn str(&mut self, len: u32) -> Option<&'a str> {
        // Most optional strings of a delivery are absent: no UTF-8 check
        // (a call) for them.
        if len == 0 {
            return Some("");
        }
        utf8(self.bytes(len)?)
    }

    fn sized_str(&mut self) -> Option<&'a str> {
        let len = self.u32()?;
        self.str(len)
    }
}

/// `bytes` as text if it is UTF-8. Topics are short and nearly always
/// ASCII, which is checked inline eight bytes at a time; `str::from_utf8`,
/// a call per string, was about 2 % of the broker's CPU under NATS
/// deliveries.
#[allow(unsafe_code)]
fn utf8(bytes: &[u8]) -> Option<&str> {
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut seen = 0u64;
    for chunk in chunks.by_ref() {
        seen |= u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
    }
    // A byte at a time: copying the tail into a word has a length the
    // compiler cannot see, a call out of the guest in wasm.
    for &byte in chunks.remainder() {
        seen |= u64::from(byte);
    }
    if seen & HIGH_BITS == 0 {
        // SAFETY: no byte has its high bit set, so all are ASCII, which is
        // UTF-8.
        return Some(unsafe { str::from_utf8_unchecked(bytes) });
    }
    str::from_utf8(bytes).ok()
}

/// Iterator over [`Headers`].
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    pub(crate) left: u32,
    pub(crate) rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut reader = Reader(self.rest);
        // Checked when the delivery was read, so this cannot fail.
        let name = reader.sized_str()?;
        let value = reader.sized_str()?;
        self.rest = reader.0;
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}
