//! `hostile`: a test-only guest that misbehaves on request.
//!
//! It proves the sandbox: each command makes the guest break in one way,
//! and the broker must stop only the connection that asked for it (or
//! refuse the call, when the guest can carry on). Never ship it.
//!
//! ```text
//! echo <text>            -> <text>          a well-behaved baseline
//! will <topic> <text>    -> +OK             sets a will, to see it published after a fault
//! loop                   spins in on-stream (stopped at the call deadline)
//! panic | unreachable    traps
//! out-of-bounds          reads past the end of its memory (a trap)
//! oom                    allocates until memory is refused
//! recurse                recurses until the stack overflows
//! flood                  sends until the outbound buffer limit stops it
//! publish-flood          publishes until the per-call input budget stops it
//! batch-flood            publishes one batch larger than the per-call input budget
//! batch-long             publishes one batch of more messages than a call takes
//! deliver-loop <filter>  subscribes, then spins in on-deliver
//! timer-loop             sets a timer, then spins in on-timer
//! close-loop             spins in on-close when the connection ends
//! huge-topic | huge-headers | bad-ids | outside-grants
//!                        calls the host with bad arguments; answers -ERR lines
//! bad-utf8               publishes a topic that is not UTF-8 (a trap: the
//!                        component model's strings are UTF-8)
//! bad-utf8-batch         the same as the second message of a batch
//! forge                  logs and prints text with a newline and terminal escapes in it
//! handles <n>            takes n WASI stdout handles and never drops them; +OK n if it could
//! ```
//!
//! Framing is the guest's own (lines, in `on-stream`), so its answers can
//! lie too: input starting `frame-loop` spins, `frame-zero` reports bytes
//! handled in no frame, `frame-long` more bytes than it was given,
//! `frame-huge` a next frame larger than any limit, `frame-forge` a close
//! reason with a newline in it. `probe` spins on a prefix starting `loop-probe`, and
//! `on-open` spins on a listener named `loop-open`.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cell::Cell;
use std::hint::black_box;

use sandport_guest::types::{
    CloseReason, ConnectionInfo, Framing, LogLevel, Message, NextFrame, ProbeResult, ProtocolInfo,
    StreamScan, Will,
};
use sandport_guest::{Handler, host, message, wildcard_subscription};

struct Hostile;

thread_local! {
    static LOOP_IN_DELIVER: Cell<bool> = const { Cell::new(false) };
    static LOOP_IN_TIMER: Cell<bool> = const { Cell::new(false) };
    static LOOP_IN_CLOSE: Cell<bool> = const { Cell::new(false) };
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

// Endless on purpose: the stack overflow is the test.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    frame[0] + recurse(black_box(depth + 1))
}

fn trap_unreachable() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("unreachable");
}

/// Read the byte just past the end of linear memory: a trap, whether the
/// host's compiled code checks the bound or the access lands in the
/// memory slot's unmapped guard region.
fn read_out_of_bounds() -> u8 {
    #[cfg(target_arch = "wasm32")]
    {
        let end = core::arch::wasm32::memory_size(0) * 65536;
        // SAFETY: none, on purpose: the load is outside the memory and
        // WebAssembly traps on it; that trap is the test.
        unsafe { core::ptr::read_volatile(end as *const u8) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    panic!("out of bounds");
}

/// Publish to a topic whose bytes are not UTF-8, which safe Rust cannot
/// make; the host must stop the guest rather than route it.
fn publish_invalid_utf8() {
    // Through `black_box`, so the compiler cannot see the bytes.
    let not_utf8: &[u8] = black_box(b"bad/\xff\xfe");
    // SAFETY: none, on purpose: a `str` that is not UTF-8 is what a guest
    // in another language can pass, and the host's check is the test. The
    // guest only hands its pointer and length to the host.
    let topic = unsafe { std::str::from_utf8_unchecked(not_utf8) };
    answer("bad utf-8", host::publish(message(topic, b"x")));
}

/// Publish a batch whose second message's topic is not UTF-8: the host
/// must stop the guest there too.
fn publish_invalid_utf8_in_batch() {
    let not_utf8: &[u8] = black_box(b"bad/\xff\xfe");
    // SAFETY: as in `publish_invalid_utf8`.
    let topic = unsafe { std::str::from_utf8_unchecked(not_utf8) };
    let outcomes = host::publish_batch(&[message("ok/first", b"x"), message(topic, b"x")]);
    host::send(format!("+OK bad utf-8 batch accepted: {} outcomes\n", outcomes.len()).as_bytes());
}

/// Take `count` handles to stdout from WASI and keep them all: host memory
/// the guest's own memory limit does not count.
fn hold_handles(count: usize) {
    #[cfg(target_arch = "wasm32")]
    for _ in 0..count {
        std::mem::forget(wasi::cli::stdout::get_stdout());
    }
    host::send(format!("+OK {count}\n").as_bytes());
}

/// Report a refused host call, or that it was (wrongly) accepted.
fn answer<T>(what: &str, result: Result<T, sandport_guest::types::HostError>) {
    match result {
        Ok(_) => host::send(format!("+OK {what} accepted\n").as_bytes()),
        Err(e) => host::send(format!("-ERR {what}: {:?} {}\n", e.code, e.message).as_bytes()),
    }
}

fn command(line: &str) {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "echo" => host::send(format!("{rest}\n").as_bytes()),
        "will" => {
            let (topic, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let will = Will { message: message(topic, text.as_bytes()), delay_secs: 0 };
            match host::set_will(Some(will)) {
                Ok(()) => host::send(b"+OK\n"),
                Err(e) => host::send(format!("-ERR {}\n", e.message).as_bytes()),
            }
        }
        "loop" => spin(),
        "panic" => panic!("asked to panic"),
        "unreachable" => trap_unreachable(),
        "out-of-bounds" => host::send(&[read_out_of_bounds()]),
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                black_box(&hoard);
            }
        }
        "recurse" => {
            black_box(recurse(0));
        }
        "flood" => {
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                host::send(&chunk);
            }
        }
        "publish-flood" => {
            let payload = vec![b'x'; 64 * 1024];
            loop {
                let _ = host::publish(message("flood/x", &payload));
            }
        }
        "batch-flood" => {
            // 32 messages of 64 KiB: twice the tests' 1 MiB budget per call.
            let payload = vec![b'x'; 64 * 1024];
            let batch: Vec<Message<'_>> = (0..32).map(|_| message("flood/x", &payload)).collect();
            let outcomes = host::publish_batch(&batch);
            host::send(format!("+OK batch flood accepted: {} outcomes\n", outcomes.len()).as_bytes());
        }
        "batch-long" => {
            let batch = vec![message("long/x", b""); sandport_guest::MAX_PUBLISH_BATCH + 1];
            let outcomes = host::publish_batch(&batch);
            host::send(format!("+OK long batch accepted: {} outcomes\n", outcomes.len()).as_bytes());
        }
        "deliver-loop" => {
            answer("subscribe", host::subscribe(rest, wildcard_subscription()));
            LOOP_IN_DELIVER.set(true);
        }
        "timer-loop" => {
            LOOP_IN_TIMER.set(true);
            host::set_timer(10);
        }
        "close-loop" => {
            LOOP_IN_CLOSE.set(true);
            host::send(b"+OK\n");
        }
        "huge-topic" => answer("huge topic", host::publish(message(&"t".repeat(100_000), b"x"))),
        "huge-headers" => {
            let names: Vec<String> = (0..5000).map(|i| format!("h{i}")).collect();
            let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "v")).collect();
            let msg = Message { headers: &headers, ..message("ok/headers", b"x") };
            answer("huge headers", host::publish(msg));
        }
        "bad-ids" => {
            answer("unsubscribe", host::unsubscribe(987_654));
            answer("ack", host::ack(123_456_789));
        }
        "outside-grants" => {
            answer("publish", host::publish(message("forbidden/x", b"x")));
            answer("subscribe", host::subscribe("#", wildcard_subscription()));
        }
        "handles" => hold_handles(rest.parse().unwrap_or(0)),
        "bad-utf8" => publish_invalid_utf8(),
        "bad-utf8-batch" => publish_invalid_utf8_in_batch(),
        "forge" => {
            host::log(LogLevel::Warn, "logged: first line\nforged: second line \u{1b}[2J");
            eprintln!("printed: \u{1b}[2J\r");
            host::send(b"+OK\n");
        }
        _ => host::send(b"unknown\n"),
    }
}

impl Handler for Hostile {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Guest,
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        if prefix.starts_with(b"loop-probe") {
            spin();
        }
        ProbeResult::NoMatch
    }

    fn on_stream(data: Vec<u8>) -> Result<StreamScan, String> {
        let scan = |handled: usize, frames, next| Ok(StreamScan { handled: handled as u32, frames, next });
        if data.starts_with(b"frame-loop") {
            spin();
        } else if data.starts_with(b"frame-zero") {
            return scan(data.len(), 0, NextFrame::Unknown);
        } else if data.starts_with(b"frame-long") {
            return scan(data.len() + 10, 1, NextFrame::Unknown);
        } else if data.starts_with(b"frame-huge") {
            return scan(0, 0, NextFrame::Needs(u32::MAX));
        } else if data.starts_with(b"frame-forge") {
            return Err("closing\nforged: a line of its own".into());
        }
        let (mut handled, mut frames) = (0, 0);
        for line in data.split_inclusive(|b| *b == b'\n').take_while(|line| line.ends_with(b"\n")) {
            command(String::from_utf8_lossy(line).trim_end());
            handled += line.len();
            frames += 1;
        }
        scan(handled, frames, NextFrame::Unknown)
    }

    fn on_open(info: ConnectionInfo) {
        if info.listener == "loop-open" {
            spin();
        }
    }

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        sandport_guest::framed_by_guest()
    }

    fn on_deliver(_batch: Vec<u8>) {
        if LOOP_IN_DELIVER.get() {
            spin();
        }
    }

    fn on_timer() {
        if LOOP_IN_TIMER.get() {
            spin();
        }
    }

    fn on_close(_reason: CloseReason) {
        if LOOP_IN_CLOSE.get() {
            spin();
        }
    }
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Hostile);
