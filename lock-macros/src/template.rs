//! Key templates: literal text with `{path}` placeholders; `{{` and `}}` escape braces.

/// One piece of a key template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text, braces unescaped.
    Text(String),
    /// A placeholder: a parameter name, then field accesses (`order.id`, `self.tenant`).
    Path(Vec<String>),
}

/// Splits `template` into text and placeholders, or says what is wrong with it.
pub(crate) fn parse(template: &str) -> Result<Vec<Segment>, String> {
    if template.is_empty() {
        return Err(
            "the key template is empty: name the lock, e.g. key = \"order:{order.id}\"".into(),
        );
    }
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => {
                return Err(
                    "unmatched `}` in the key template: write `}}` for a literal brace".into(),
                );
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') => {
                            return Err(format!(
                                "unbalanced braces in the key template: `{{{inner}` opens a \
                                 placeholder before the previous one closed"
                            ));
                        }
                        Some(c) => inner.push(c),
                        None => {
                            return Err(format!(
                                "unclosed placeholder `{{{inner}` in the key template: add `}}` \
                                 (or write `{{{{` for a literal brace)"
                            ));
                        }
                    }
                }
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Path(path(&inner)?));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(segments)
}

fn path(inner: &str) -> Result<Vec<String>, String> {
    if inner.trim().is_empty() {
        return Err(
            "empty placeholder `{}` in the key template: name a parameter, \
                    e.g. `{order.id}`"
                .into(),
        );
    }
    let parts: Vec<String> = inner.split('.').map(str::to_owned).collect();
    for (i, part) in parts.iter().enumerate() {
        let ident = !part.is_empty()
            && part
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_alphanumeric() || c == '_');
        let index = i > 0 && !part.is_empty() && part.chars().all(|c| c.is_ascii_digit());
        if !(ident || index) {
            return Err(format!(
                "invalid placeholder `{{{inner}}}` in the key template: expected a parameter \
                 name followed by field accesses, like `{{order.id}}` or `{{self.tenant}}`"
            ));
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    fn field(p: &str) -> Segment {
        Segment::Path(p.split('.').map(str::to_owned).collect())
    }

    #[test]
    fn templates_split_into_text_and_paths() {
        assert_eq!(
            parse("order:{order.id}").unwrap(),
            vec![text("order:"), field("order.id")]
        );
        assert_eq!(
            parse("{self.tenant}:{n}").unwrap(),
            vec![field("self.tenant"), text(":"), field("n")]
        );
        assert_eq!(parse("a{{b}}c").unwrap(), vec![text("a{b}c")]);
        assert_eq!(parse("{pair.0}").unwrap(), vec![field("pair.0")]);
    }

    #[test]
    fn bad_templates_say_why() {
        for bad in [
            "", "{}", "a{b", "a}b", "{a{b}}", "{a.}", "{.a}", "{1}", "{a-b}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
