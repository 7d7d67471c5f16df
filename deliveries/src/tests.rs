//! Round trips through the packed layout, and malformed batches.

use alloc::vec::Vec;

use super::*;

fn plain(
    topic: &'static str,
    payload: &'static [u8],
) -> Delivery<'static, &'static [(&'static str, &'static str)]> {
    Delivery {
        subscription: 7,
        id: None,
        message: Message {
            topic,
            payload,
            headers: &[],
            reply_to: None,
            correlation: None,
            content_type: None,
            utf8_payload: false,
            expiry_secs: None,
            retain: false,
            qos: Qos::AtMostOnce,
        },
        from_retained: false,
        redelivered: false,
    }
}

fn full() -> Delivery<'static, &'static [(&'static str, &'static str)]> {
    Delivery {
        subscription: u32::MAX,
        id: Some(u64::MAX - 1),
        message: Message {
            topic: "sensors/é/1",
            payload: b"\x00\xffpayload",
            headers: &[("name", "value"), ("name", ""), ("", "x")],
            reply_to: Some("replies/1"),
            correlation: Some(b"\x01\x02"),
            content_type: Some("text/plain"),
            utf8_payload: true,
            expiry_secs: Some(0),
            retain: true,
            qos: Qos::ExactlyOnce,
        },
        from_retained: true,
        redelivered: true,
    }
}

/// What a read delivery says, with its headers collected, to compare with what was packed.
fn same<H: PackHeaders>(read: &Delivery<'_>, packed: &Delivery<'_, H>) {
    let (r, p) = (&read.message, &packed.message);
    assert_eq!(
        (read.subscription, read.id, read.from_retained, read.redelivered),
        (packed.subscription, packed.id, packed.from_retained, packed.redelivered)
    );
    assert_eq!(
        (r.topic, r.payload, r.reply_to, r.correlation, r.content_type),
        (p.topic, p.payload, p.reply_to, p.correlation, p.content_type)
    );
    assert_eq!(
        (r.utf8_payload, r.expiry_secs, r.retain, r.qos),
        (p.utf8_payload, p.expiry_secs, p.retain, p.qos)
    );
    assert_eq!(r.headers.len(), p.headers.count());
    assert!(r.headers.iter().eq(p.headers.pairs()));
}

#[test]
fn deliveries_come_back_as_they_were_packed() {
    let mut at_least_once = plain("a", b"");
    at_least_once.id = Some(0);
    at_least_once.message.qos = Qos::AtLeastOnce;
    let packed = [plain("a/b", b"hello"), full(), at_least_once, plain("", b"")];
    let mut batch = Vec::new();
    for delivery in &packed {
        pack(&mut batch, delivery).unwrap();
    }
    let mut deliveries = Deliveries::new(&batch);
    let read: Vec<_> = deliveries.by_ref().collect();
    assert_eq!(read.len(), packed.len());
    for (read, packed) in read.iter().zip(&packed) {
        same(read, packed);
    }
    assert!(!deliveries.malformed());
    assert!(deliveries.unread().is_empty());
    super::fuzzing::batch(&batch);
}

#[test]
fn a_plain_delivery_is_the_fixed_part_and_its_bytes() {
    let mut batch = Vec::new();
    pack(&mut batch, &plain("t", b"ab")).unwrap();
    assert_eq!(batch.len(), FIXED_BYTES + 3);
    assert_eq!(&batch[..4], &7u32.to_le_bytes(), "subscription first");
    assert_eq!(&batch[FIXED_BYTES..], b"tab", "topic, then payload");
}

#[test]
fn read_deliveries_can_be_packed_again() {
    let mut batch = Vec::new();
    pack(&mut batch, &full()).unwrap();
    let read = Deliveries::new(&batch).next().unwrap();
    let mut again = Vec::new();
    pack(&mut again, &read).unwrap();
    assert_eq!(again, batch);
}

#[test]
fn an_empty_batch_has_no_deliveries() {
    let mut deliveries = Deliveries::new(&[]);
    assert!(deliveries.next().is_none());
    assert!(!deliveries.malformed());
}

#[test]
fn a_cut_batch_stops_at_the_cut_delivery() {
    let mut batch = Vec::new();
    pack(&mut batch, &plain("first", b"1")).unwrap();
    let first = batch.len();
    pack(&mut batch, &full()).unwrap();
    for cut in 1..batch.len() {
        let mut deliveries = Deliveries::new(&batch[..cut]);
        let whole = deliveries.by_ref().count();
        assert_eq!(whole, usize::from(cut >= first), "cut at {cut}");
        assert_eq!(deliveries.malformed(), cut != first, "cut at {cut}");
    }
}

#[test]
fn malformed_deliveries_are_refused() {
    let mut good = Vec::new();
    pack(&mut good, &full()).unwrap();
    let refused = |edit: &dyn Fn(&mut Vec<u8>), why: &str| {
        let mut batch = good.clone();
        edit(&mut batch);
        let mut deliveries = Deliveries::new(&batch);
        assert_eq!(deliveries.next(), None, "{why}");
        assert!(deliveries.malformed(), "{why}");
    };
    refused(&|b| b[4..8].copy_from_slice(&(1u32 << 9).to_le_bytes()), "unknown flag");
    refused(&|b| b[4..8].copy_from_slice(&(3u32 << 16).to_le_bytes()), "QoS 3");
    refused(&|b| b[FIXED_BYTES] = 0xff, "topic not UTF-8");
    refused(&|b| b[20..24].copy_from_slice(&u32::MAX.to_le_bytes()), "topic past the end");
    refused(&|b| b[40..44].copy_from_slice(&4u32.to_le_bytes()), "more headers than packed");
    let mut plain_batch = Vec::new();
    pack(&mut plain_batch, &plain("t", b"")).unwrap();
    for (at, why) in [
        (8, "an id without its flag"),
        (16, "an expiry without its flag"),
        (28, "a reply-to length without its flag"),
    ] {
        let mut batch = plain_batch.clone();
        batch[at] = 1;
        let mut deliveries = Deliveries::new(&batch);
        assert_eq!(deliveries.next(), None, "{why}");
        assert!(deliveries.malformed(), "{why}");
        assert_eq!(deliveries.unread(), &batch[..], "{why}: nothing read");
    }
    let last_value = good.len() - 1;
    refused(&|b| b[last_value] = 0xc3, "header value not UTF-8");
}

/// Topics of every length up to past three words, with a two-byte
/// character or an invalid byte at each place: the word-wide ASCII check and
/// its byte-wise tail must agree with `str::from_utf8`.
#[test]
fn topics_are_read_as_utf8_wherever_their_bytes_fall() {
    use alloc::string::String;
    for len in 0..27 {
        let ascii: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let mut topics = alloc::vec![ascii.clone()];
        for at in 0..len {
            let mut with_accent = ascii.clone();
            with_accent.replace_range(at..at + 1, "é");
            topics.push(with_accent);
        }
        for topic in &topics {
            let mut batch = Vec::new();
            pack(&mut batch, &plain(topic.clone().leak(), b"x")).unwrap();
            assert_eq!(Deliveries::new(&batch).next().map(|d| d.message.topic), Some(topic.as_str()));
            for at in 0..topic.len() {
                let mut bad = batch.clone();
                bad[FIXED_BYTES + at] = 0xff;
                let mut deliveries = Deliveries::new(&bad);
                assert_eq!(deliveries.next(), None, "{topic:?} with 0xff at {at}");
                assert!(deliveries.malformed());
            }
        }
    }
}

/// Says it has more headers than a packed count can hold.
struct Countless;

impl PackHeaders for Countless {
    fn count(&self) -> usize {
        u32::MAX as usize + 1
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        core::iter::empty()
    }
}

#[test]
fn a_delivery_too_large_to_pack_leaves_the_batch_as_it_was() {
    let mut batch = Vec::new();
    pack(&mut batch, &plain("kept", b"")).unwrap();
    let before = batch.clone();
    let m = plain("t", b"").message;
    let message = Message {
        topic: m.topic,
        payload: m.payload,
        headers: Countless,
        reply_to: m.reply_to,
        correlation: m.correlation,
        content_type: m.content_type,
        utf8_payload: m.utf8_payload,
        expiry_secs: m.expiry_secs,
        retain: m.retain,
        qos: m.qos,
    };
    let huge = Delivery { subscription: 1, id: None, message, from_retained: false, redelivered: false };
    assert_eq!(pack(&mut batch, &huge), Err(TooLarge));
    assert_eq!(batch, before);
}
