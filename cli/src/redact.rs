//! Passwords never reach the terminal: every URL-looking word in a message the tool prints
//! (clap quotes the arguments it refuses) goes through the runtime's redaction.

/// `text` with every `scheme://...` word replaced by its redacted form
/// ([`distlock::redact_url`]), and anything before a stray `@` of a word hidden too: for
/// messages that quote the command line as typed.
pub(crate) fn redact_text(text: &str) -> String {
    redact(text, true)
}

/// `text` with every `scheme://...` word redacted: for messages that may name a URL (a key
/// with an `@` in it stays readable).
pub(crate) fn redact_urls(text: &str) -> String {
    redact(text, false)
}

fn redact(text: &str, at_signs: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_separator(c) {
            out.push_str(&redact_word(&word, at_signs));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&redact_word(&word, at_signs));
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '`' | ',' | '(' | ')' | '<' | '>')
}

fn redact_word(word: &str, at_signs: bool) -> String {
    if word.contains("://") {
        // Keep what comes before the scheme (e.g. `--url=`), redact the rest.
        let scheme_start = word
            .find("://")
            .map(|end| {
                word[..end]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                    .map_or(0, |i| i + 1)
            })
            .unwrap_or(0);
        format!(
            "{}{}",
            &word[..scheme_start],
            distlock::redact_url(&word[scheme_start..])
        )
    } else if let Some(at) = word.rfind('@').filter(|_| at_signs) {
        // `user:password@host` without a scheme.
        format!("***{}", &word[at..])
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_their_passwords() {
        let text = "error: unexpected argument 'redis://:s3cret@127.0.0.1:6379' found\n\n  tip: --url=redis://u:pw2@h:1/0 (x) \"rediss://a:pw3@h\"";
        let shown = redact_text(text);
        for pw in ["s3cret", "pw2", "pw3"] {
            assert!(!shown.contains(pw), "{shown}");
        }
        assert!(
            shown.contains(
                "'redis://:***@127.0.0.1:6379' found\n\n  tip: --url=redis://u:***@h:1/0 (x)"
            ),
            "{shown}"
        );
    }

    #[test]
    fn credentials_without_a_scheme_are_hidden() {
        assert_eq!(
            redact_text("bad 'user:pw@host:1' here"),
            "bad '***@host:1' here"
        );
        assert_eq!(redact_urls("no lock on \"a@b\""), "no lock on \"a@b\"");
    }

    #[test]
    fn other_text_is_unchanged() {
        let text = "error: the argument '--fence <N>' cannot be used… ünïcode\ttab";
        assert_eq!(redact_text(text), text);
    }
}
