//! CSV as RFC 4180 quotes it (fields with commas, quotes or line breaks in double quotes,
//! quotes doubled), with `\n` line ends for the Unix tools that read these next.

use std::path::Path;

use super::ReportError;

/// Writes `header` and then `rows` to `path`.
pub(super) fn write<const N: usize>(
    path: &Path,
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> Result<(), ReportError> {
    let mut text = String::new();
    push_line(&mut text, header.iter().copied());
    for row in rows {
        push_line(&mut text, row.iter().map(String::as_str));
    }
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}

fn push_line<'a>(text: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            text.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            text.push('"');
            text.push_str(&field.replace('"', "\"\""));
            text.push('"');
        } else {
            text.push_str(field);
        }
    }
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_fields_that_need_it() {
        let mut text = String::new();
        push_line(&mut text, ["plain", "a,b", "say \"hi\"", "two\nlines", ""].into_iter());
        assert_eq!(text, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\n");
    }
}
