//! Input text made safe to print: control characters escaped, long text cut at a char boundary.
//!
//! Ids and other strings a producer wrote reach logs and dead letters. Printed raw, a newline
//! in one would start a line of its own, and a producer could forge log lines.

use std::fmt;

/// Displays `text` with every control character escaped (`\n`, `\u{1b}`), everything else as
/// it is: what a log line may print of input.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` with its control characters escaped (see [`Escaped`]).
pub fn escaped(text: &str) -> String {
    Escaped(text).to_string()
}

/// The longest prefix of `text` of at most `max_bytes` that ends on a char boundary, and
/// whether anything was cut.
pub fn truncated(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// Whether `text` holds a control character (a newline, a tab, an ANSI escape).
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("o-1\nINFO step: wallet charged"), "o-1\\nINFO step: wallet charged");
        assert_eq!(escaped("\u{1b}[31mred\r"), "\\u{1b}[31mred\\r");
        assert_eq!(escaped("café ✓ \"quoted\""), "café ✓ \"quoted\"");
    }

    #[test]
    fn truncation_ends_on_a_char_boundary() {
        assert_eq!(truncated("abc", 5), ("abc", false));
        assert_eq!(truncated("aé", 2), ("a", true));
        assert_eq!(truncated("aé", 3), ("aé", false));
    }

    proptest! {
        #[test]
        fn escaped_text_never_holds_a_line_break(s in any::<String>()) {
            let e = escaped(&s);
            prop_assert!(!has_control(&e));
            prop_assert_eq!(has_control(&s), e != s);
        }
    }
}
