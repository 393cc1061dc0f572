//! Text from outside (an upstream's names, versions and files, a peer's answers, error
//! messages that quote them) made safe to show on a terminal. Shared by every crate and the
//! binary, so that one rule decides what is escaped.

use std::borrow::Cow;
use std::fmt;

/// Whether a terminal would act on `c` instead of showing it: C0 and C1 controls (escape
/// sequences, carriage return, NUL, ...), DEL, and the Unicode marks that reorder or hide the
/// text around them (bidirectional overrides and isolates).
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character a terminal would act on written as its Rust escape (`\n`, `\0`,
/// `\u{1b}`, `\u{202e}`); everything else, other scripts included, is left as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if acts_on_terminal(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that should be text: invalid UTF-8 shows as U+FFFD, then as [`printable`].
pub fn printable_bytes(b: &[u8]) -> String {
    printable(&String::from_utf8_lossy(b)).into_owned()
}

/// [`printable`] for `format!` arguments: `format!("{}", Printable(&name))`.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_text_is_kept() {
        for (raw, shown) in [
            ("core", "core"),
            ("fäß-1.0 ü", "fäß-1.0 ü"),
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
            ),
            ("a\0b", "a\\0b"),
            ("line\nnext\r", "line\\nnext\\r"),
            ("tab\there", "tab\\there"),
            ("\u{7f}\u{9b}31m", "\\u{7f}\\u{9b}31m"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("quote \" and \\ stay", "quote \" and \\ stay"),
        ] {
            assert_eq!(printable(raw), shown, "{raw:?}");
            assert_eq!(Printable(raw).to_string(), shown, "{raw:?}");
        }
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable_bytes(b"ok\xff\x1b"), "ok\u{fffd}\\u{1b}");
    }
}
