//! A short smoke run of every fuzz target (`fuzz/fuzz_targets`), so the
//! targets cannot rot and their invariants are checked on every test run:
//! each entry point gets protocol-shaped seeds, seeded random mutations of
//! them, and random bytes. Long campaigns use `cargo fuzz` (docs/fuzzing.md).

/// Inputs per target.
const RUNS: usize = 20_000;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A seed with a few bytes flipped, inserted, removed or duplicated.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut input = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(input.len() + 1);
            match self.below(4) {
                0 if at < input.len() => input[at] ^= 1 << self.below(8),
                1 => input.insert(at, self.next() as u8),
                2 if at < input.len() => {
                    input.remove(at);
                }
                _ => {
                    let tail = input[at..].to_vec();
                    input.extend_from_slice(&tail[..tail.len().min(8)]);
                }
            }
        }
        input
    }

    fn bytes(&mut self) -> Vec<u8> {
        (0..self.below(64)).map(|_| self.next() as u8).collect()
    }
}

fn smoke(seeds: &[&[u8]], target: fn(&[u8])) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for seed in seeds {
        target(seed);
    }
    for run in 0..RUNS {
        let input = if run % 4 == 0 {
            rng.bytes()
        } else {
            let seed = seeds[rng.below(seeds.len())];
            rng.mutate(seed)
        };
        target(&input);
    }
}

#[test]
fn framing() {
    smoke(
        &[b"\x00\n\n\x00hello\nworld\n", b"\x01\x00\x02\x01\x00\x05hello", b"\x02\x01\x04\x00\x30\x05hello"],
        sandport_framing::fuzzing::stream,
    );
}

#[test]
fn mqtt_packet() {
    smoke(
        &[
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd",
            b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x0a\x00\x04abcd",
            b"\x32\x0a\x00\x03a/b\x00\x01\x00hi",
            b"\x82\x08\x00\x01\x00\x03a/#\x01",
            b"\x82\x0a\x00\x01\x02\x0b\x07\x00\x03a/+\x2d",
            b"\xa2\x07\x00\x02\x00\x00\x03a/b",
            b"\x62\x02\x00\x05",
            b"\xe0\x02\x04\x00",
        ],
        sandport_guest_mqtt::fuzzing::packet,
    );
}

#[test]
fn nats_stream() {
    smoke(
        &[
            b"CONNECT {\"verbose\":false}\r\nPING\r\n",
            b"PUB a.b 5\r\nhello\r\nSUB a.* q 1\r\n",
            b"HPUB a 22 27\r\nNATS/1.0\r\nk: v\r\n\r\nhello\r\n",
            b"UNSUB 1 5\r\nPONG\r\n",
        ],
        sandport_guest_nats::fuzzing::stream,
    );
}

#[test]
fn resp_stream() {
    smoke(
        &[
            b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n",
            b"PING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"*1\r\n$-1\r\n",
            b"*-1\r\nQUIT\r\n",
            b"*3\r\n$7\r\npublish\r\n$5\r\na+b%#\r\n$2\r\nhi\r\n",
            "*2\r\n$5\r\np\u{ef}ng\r\n$5\r\ncaf\u{e9}\r\nSUBSCRIBE x%2B\r\n".as_bytes(),
        ],
        sandport_guest_resp::fuzzing::stream,
    );
}

#[test]
fn deliveries_batch() {
    use sandport_deliveries::{Delivery, Message, Qos, pack};
    let headers: &[(&str, &str)] = &[("name", "value"), ("name", "")];
    let delivery = |id, qos, headers: &'static [(&'static str, &'static str)]| Delivery {
        subscription: 3,
        id,
        message: Message {
            topic: "a/b",
            payload: b"payload",
            headers,
            reply_to: id.map(|_| "replies/1"),
            correlation: id.map(|_| &b"\x00\x01"[..]),
            content_type: None,
            utf8_payload: id.is_some(),
            expiry_secs: id.map(|_| 30),
            retain: false,
            qos,
        },
        from_retained: false,
        redelivered: id.is_some(),
    };
    let mut plain = Vec::new();
    pack(&mut plain, &delivery(None, Qos::AtMostOnce, &[])).unwrap();
    let mut full = Vec::new();
    pack(&mut full, &delivery(Some(7), Qos::ExactlyOnce, headers)).unwrap();
    let two = [plain.clone(), full.clone()].concat();
    smoke(&[&plain, &full, &two], sandport_deliveries::fuzzing::batch);
}
