//! RFC 822-style control data as Debian writes it (dpkg `status`, `Packages`, `Release`,
//! deb822 `.sources`): paragraphs separated by blank lines, `Field: value` lines, continuation
//! lines starting with a space or tab. Values borrow from the input.

/// At most this many fields in one paragraph; real ones have a few dozen.
pub const MAX_FIELDS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} (byte offset {offset}): {what}")]
pub struct Deb822Error {
    pub line: usize,
    pub offset: usize,
    pub what: &'static str,
}

/// One paragraph: fields in input order. A multi-line value keeps its continuation lines
/// (with their leading space) after the first line's text, joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub fields: Vec<(&'a str, &'a str)>,
    /// Line number (1-based) where the paragraph starts, for error messages.
    pub line: usize,
}

impl<'a> Paragraph<'a> {
    /// The value of `name` (field names are case-insensitive), trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// Iterates over the paragraphs of `text`. Lines starting with `#` are comments (deb822
/// `.sources` allow them; the other formats never start a line with `#`).
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        text,
        pos: 0,
        line: 0,
        failed: false,
    }
}

pub struct Paragraphs<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    failed: bool,
}

impl<'a> Paragraphs<'a> {
    /// The next line (without its newline) and its byte offset, or `None` at the end.
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let (line, advance) = match rest.find('\n') {
            Some(n) => (&rest[..n], n + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.line += 1;
        Some((start, line.strip_suffix('\r').unwrap_or(line)))
    }

    fn peek_is_continuation(&self) -> bool {
        matches!(self.text.as_bytes().get(self.pos), Some(b' ' | b'\t'))
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, Deb822Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut para = Paragraph::default();
        while let Some((offset, line)) = self.next_line() {
            if line.starts_with('#') {
                continue;
            }
            if line.trim().is_empty() {
                if para.fields.is_empty() {
                    continue;
                }
                return Some(Ok(para));
            }
            let err = |what| Deb822Error {
                line: self.line,
                offset,
                what,
            };
            if line.starts_with([' ', '\t']) {
                self.failed = true;
                return Some(Err(err("continuation line outside a field")));
            }
            let Some((name, first)) = line.split_once(':') else {
                self.failed = true;
                return Some(Err(err("line is neither `Field: value` nor a continuation")));
            };
            if name.is_empty() || name.contains([' ', '\t']) {
                self.failed = true;
                return Some(Err(err("malformed field name")));
            }
            if para.fields.len() >= MAX_FIELDS {
                self.failed = true;
                return Some(Err(err("more fields in one paragraph than any real control data has")));
            }
            if para.fields.is_empty() {
                para.line = self.line;
            }
            // The value spans its first line and every continuation line after it.
            let value_start = offset + name.len() + 1;
            let mut value_end = offset + line.len();
            while self.peek_is_continuation() {
                match self.next_line() {
                    Some((o, l)) if !l.starts_with('#') => value_end = o + l.len(),
                    _ => {}
                }
            }
            let value = self.text.get(value_start..value_end).unwrap_or(first);
            para.fields.push((name, value));
        }
        (!para.fields.is_empty()).then_some(Ok(para))
    }
}

/// The signed text of a clearsigned message (`InRelease`), dash-escaping undone, as apt
/// reads it: exactly one `BEGIN PGP SIGNED MESSAGE` block followed by its signature, nothing
/// else but blank lines around. Verifying the signature is the caller's business.
pub fn clearsigned_text(text: &str) -> Result<String, Deb822Error> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    const SIG: &str = "-----BEGIN PGP SIGNATURE-----";
    const END: &str = "-----END PGP SIGNATURE-----";
    let err = |line, what| Deb822Error { line, offset: 0, what };
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate();
    // Leading blank lines only.
    loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) if l == BEGIN => break,
            Some((n, _)) => return Err(err(n + 1, "not a clearsigned message: text before the signed block")),
            None => return Err(err(0, "not a clearsigned message")),
        }
    }
    // Armor headers (Hash: ...) up to the first blank line.
    loop {
        match lines.next() {
            Some((_, "")) => break,
            Some((_, l)) if l.starts_with("Hash:") => continue,
            Some((n, _)) => return Err(err(n + 1, "unexpected armor header in a clearsigned message")),
            None => return Err(err(0, "clearsigned message ends in its armor headers")),
        }
    }
    let mut out = String::new();
    loop {
        match lines.next() {
            Some((_, l)) if l == SIG => break,
            Some((_, l)) => {
                let l = l.strip_prefix("- ").unwrap_or(l);
                out.push_str(l);
                out.push('\n');
            }
            None => return Err(err(0, "clearsigned message without a signature")),
        }
    }
    let mut ended = false;
    for (n, l) in lines {
        if ended {
            if !l.trim().is_empty() {
                return Err(err(n + 1, "text after the signature of a clearsigned message"));
            }
        } else if l == END {
            ended = true;
        } else if l.starts_with("-----") {
            return Err(err(n + 1, "a second armored block in a clearsigned message"));
        }
    }
    if !ended {
        return Err(err(0, "clearsigned message whose signature block never ends"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_comments() {
        let text = "# c\nPackage: a\nDescription: one\n two\n .\n three\nVersion: 1\n\n\nPackage: b\r\n";
        let paras: Vec<_> = paragraphs(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].get("package"), Some("a"));
        assert_eq!(paras[0].get("Description"), Some("one\n two\n .\n three"));
        assert_eq!(paras[0].get("Version"), Some("1"));
        assert_eq!(paras[1].get("Package"), Some("b"));
        assert_eq!(paras[1].line, 10);
    }

    #[test]
    fn errors_name_the_line() {
        let e = paragraphs("Package: a\nbogus line\n").find_map(Result::err).unwrap();
        assert_eq!((e.line, e.offset), (2, 11));
        assert!(paragraphs(" x\n").next().unwrap().is_err());
    }

    #[test]
    fn clearsigned() {
        let msg = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: x\n- -dash\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(clearsigned_text(msg).unwrap(), "Origin: x\n-dash\n");
        assert!(clearsigned_text(&format!("junk\n{msg}")).is_err());
        assert!(clearsigned_text(&format!("{msg}junk\n")).is_err());
    }
}
