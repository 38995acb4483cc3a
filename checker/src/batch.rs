//! The batch file of `dormouse check --batch`: one VM per line, in the command line's own
//! words: `[IMAGE] --disk DISK[:N] [--name NAME]` or `[IMAGE] --root DIR [--name NAME]`.
//! Blank lines and `#` comments are skipped; words are separated by whitespace (no quoting).

use std::path::PathBuf;

use crate::tree::TreeSource;
use crate::{CheckError, Target};

const MAX_LINES: usize = 100_000;

pub fn parse(text: &str, file: &str) -> Result<Vec<Target>, CheckError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |what: String| CheckError::Batch {
            file: file.to_owned(),
            line: n + 1,
            what,
        };
        let (mut image, mut tree, mut name) = (None, None, None);
        let mut words = line.split_ascii_whitespace();
        while let Some(w) = words.next() {
            let mut value = || words.next().ok_or_else(|| err(format!("{w} needs a value")));
            match w {
                "--disk" => tree = Some(TreeSource::disk(value()?)),
                "--root" => tree = Some(TreeSource::Dir(PathBuf::from(value()?))),
                "--name" => name = Some(value()?.to_owned()),
                _ if w.starts_with('-') => return Err(err(format!("unknown option {w}"))),
                _ if image.is_none() => image = Some(PathBuf::from(w)),
                _ => return Err(err(format!("a second memory image {w}"))),
            }
        }
        let tree = tree.ok_or_else(|| err("no --disk or --root".into()))?;
        if out.len() >= MAX_LINES {
            return Err(err(format!("more than {MAX_LINES} VMs")));
        }
        out.push(Target { name, image, tree });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let t = parse(
            "# fleet\nweb1.save --disk /dev/vg/web1:2 --name web1\n\n--root /srv/db1\n",
            "b",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name.as_deref(), Some("web1"));
        assert_eq!(t[0].image, Some(PathBuf::from("web1.save")));
        assert_eq!(
            t[0].tree,
            TreeSource::Disk {
                path: "/dev/vg/web1".into(),
                partition: Some(2)
            }
        );
        assert_eq!(t[1].tree, TreeSource::Dir("/srv/db1".into()));
        let e = parse("a b --disk x\n", "b").unwrap_err().to_string();
        assert!(e.contains("b:1") && e.contains("second memory image"), "{e}");
        assert!(parse("--disk\n", "b").is_err());
        assert!(parse("img.save\n", "b").is_err());
    }
}
