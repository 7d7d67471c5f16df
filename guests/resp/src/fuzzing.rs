//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: run the
//! command scanner and argument decoder on arbitrary bytes, and the
//! command-name and channel conversions on what they return, and check
//! their invariants. Pure: no host calls.

use crate::wire;

/// Bulk limit used while fuzzing, small so limits are reached.
const MAX_BULK: usize = 4096;

/// Scan `data` into commands and split each into arguments.
pub fn stream(data: &[u8]) {
    let mut frames = wire::Frames::new(data, MAX_BULK);
    let mut args = wire::Args::default();
    let mut at = 0usize;
    while frames.next_command(&mut args) {
        let frame = &data[at..frames.handled()];
        assert!(!frame.is_empty(), "empty frame");
        let quoted = args.is_quoted();
        args.with(|args| {
            names_and_channels(args);
            if quoted {
                // Unescaping only shortens: every word is at most its line.
                assert!(
                    args.iter().all(|arg| arg.len() < frame.len()),
                    "an unquoted word longer than its line"
                );
            } else {
                let inside = |arg: &&[u8]| frame.as_ptr_range().contains(&arg.as_ptr()) || arg.is_empty();
                assert!(args.iter().all(inside), "arguments lie within their command");
            }
        });
        at = frames.handled();
    }
    assert!(at <= data.len(), "commands beyond the buffer");
    if let Some(needs) = frames.needs() {
        assert!(needs as usize > data.len() - at, "asks for bytes it already has");
    }
}

/// What the guest makes of a command's name and of each argument as a
/// channel (both convert to `str` without a UTF-8 check when they see
/// ASCII; built with debug assertions, they assert it).
fn names_and_channels(args: &[&[u8]]) {
    let Some(first) = args.first() else { return };
    let mut upper = [0u8; crate::MAX_COMMAND_NAME];
    let name = crate::command_name(first, &mut upper);
    let looked_up = first.len() <= crate::MAX_COMMAND_NAME && first.is_ascii();
    let expected = if looked_up { first.to_ascii_uppercase() } else { Vec::new() };
    assert_eq!(name.as_bytes(), expected, "a command name upper-cased, or nothing");
    for arg in args {
        let topic = crate::channel_topic(arg);
        if std::str::from_utf8(arg).is_ok() {
            assert_eq!(crate::topic_channel(&topic), *arg, "a channel survives its topic");
        }
    }
}
