//! Text from a guest that the host shows an operator: its log lines, the
//! reason it gives for closing a connection, what it writes to stdout and
//! stderr, and names it passes on from clients (topics, client ids). Guests
//! are untrusted and quote what clients send, so this text is logged as
//! written but with control characters escaped: a newline cannot forge a
//! log line, nor an ANSI escape drive the operator's terminal.
//! Guests therefore need no escaping of their own (and no `{:?}` of
//! strings, which links Unicode tables into every instance's memory image).

use std::fmt;

/// Displays guest-supplied text with each control character escaped
/// (`\n`, `\t`, `\u{1b}`) and everything else as written.
#[derive(Debug, Clone, Copy)]
pub struct GuestText<'a>(pub &'a str);

impl fmt::Display for GuestText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut written = 0;
        for (at, control) in text.char_indices().filter(|(_, c)| c.is_control()) {
            f.write_str(&text[written..at])?;
            write!(f, "{}", control.escape_default())?;
            written = at + control.len_utf8();
        }
        f.write_str(&text[written..])
    }
}

#[cfg(test)]
mod tests {
    use super::GuestText;

    fn shown(text: &str) -> String {
        GuestText(text).to_string()
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(shown("\u{1b}[31mred\r\t"), "\\u{1b}[31mred\\r\\t");
        assert_eq!(shown("nul \0 and del \u{7f} and c1 \u{85}"), "nul \\u{0} and del \\u{7f} and c1 \\u{85}");
    }

    #[test]
    fn other_text_is_shown_as_written() {
        assert_eq!(shown(""), "");
        assert_eq!(shown("unknown protocol name \"MQTX\""), "unknown protocol name \"MQTX\"");
        assert_eq!(shown("température ≥ 30 °C, 温度 \\ 'ok'"), "température ≥ 30 °C, 温度 \\ 'ok'");
    }
}
