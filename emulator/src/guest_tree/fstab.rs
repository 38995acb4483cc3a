//! `/etc/fstab` of a guest: hostile input, parsed with bounds on every line and field.

/// More lines than any real fstab; the rest is ignored with a note.
const MAX_LINES: usize = 4096;
const MAX_LINE: usize = 4096;
/// Entries beyond this are ignored with a note: no real guest mounts this many filesystems.
const MAX_ENTRIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// 1-based line number, for messages.
    pub line: usize,
    pub spec: String,
    pub mount_point: String,
    pub fstype: String,
    pub options: Vec<String>,
}

impl FstabEntry {
    pub fn has_option(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }
}

/// What an fstab source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// A kernel device name such as `xvda1`: the disk's name and the partition number (0 for
    /// the whole disk).
    Device {
        disk: String,
        partition: u32,
    },
    /// Anything else (`/dev/mapper/...`, `server:/export`, `none`, ...).
    Other(String),
}

/// Parses fstab text into entries and notes about lines it could not use.
pub fn parse(text: &str) -> (Vec<FstabEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut notes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if index >= MAX_LINES {
            notes.push(format!("fstab: lines after {MAX_LINES} ignored"));
            break;
        }
        if line.len() > MAX_LINE {
            notes.push(format!("fstab line {number}: longer than {MAX_LINE} bytes, ignored"));
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
        let [spec, mount_point, fstype, rest @ ..] = fields.as_slice() else {
            notes.push(format!(
                "fstab line {number}: fewer than three fields, ignored: {line:?}"
            ));
            continue;
        };
        if entries.len() >= MAX_ENTRIES {
            notes.push(format!("fstab: entries after {MAX_ENTRIES} ignored"));
            break;
        }
        let options = rest.first().map_or("defaults", |o| o);
        entries.push(FstabEntry {
            line: number,
            spec: unescape(spec),
            mount_point: unescape(mount_point),
            fstype: unescape(fstype),
            options: unescape(options).split(',').map(str::to_owned).collect(),
        });
    }
    (entries, notes)
}

/// fstab writes a space as `\040`, a tab as `\011`, a backslash as `\134`, as /proc/mounts does.
fn unescape(field: &str) -> String {
    String::from_utf8_lossy(&introspect::octal_escape::unescape(field.as_bytes())).into_owned()
}

/// udev's `/dev/disk/by-*` names write unsafe characters as `\xHH`.
fn unescape_udev(name: &str) -> String {
    unescape_with(name, "\\x", 2, 16)
}

/// Replaces `marker` followed by `digits` digits of `radix` with the byte they spell; anything
/// else (including values over 255) stays as written.
fn unescape_with(text: &str, marker: &str, digits: usize, radix: u32) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(marker.as_bytes()) {
            let at = i + marker.len();
            if let Some(value) = bytes
                .get(at..at + digits)
                .and_then(|d| std::str::from_utf8(d).ok())
                .filter(|d| d.chars().all(|c| c.is_digit(radix)))
                .and_then(|d| u8::from_str_radix(d, radix).ok())
            {
                out.push(value);
                i = at + digits;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn source(spec: &str) -> Source {
    let tagged = [
        ("UUID=", "/dev/disk/by-uuid/"),
        ("LABEL=", "/dev/disk/by-label/"),
        ("PARTUUID=", "/dev/disk/by-partuuid/"),
        ("PARTLABEL=", "/dev/disk/by-partlabel/"),
    ];
    for (kind, (tag, dir)) in tagged.iter().enumerate() {
        let value = if let Some(v) = spec.strip_prefix(tag) {
            // Tags may be quoted like shell words.
            v.trim_matches('"').to_owned()
        } else if let Some(v) = spec.strip_prefix(dir) {
            unescape_udev(v)
        } else {
            continue;
        };
        return match kind {
            0 => Source::Uuid(value),
            1 => Source::Label(value),
            2 => Source::PartUuid(value),
            _ => Source::PartLabel(value),
        };
    }
    spec.strip_prefix("/dev/").and_then(device_name).map_or_else(
        || Source::Other(spec.to_owned()),
        |(disk, partition)| Source::Device { disk, partition },
    )
}

/// Splits a kernel block device name into disk and partition: `xvda1` → (`xvda`, 1),
/// `sdb` → (`sdb`, 0), `nvme0n1p2` → (`nvme0n1`, 2).
pub fn device_name(name: &str) -> Option<(String, u32)> {
    if let Some(rest) = name.strip_prefix("nvme") {
        let (disk, partition) = match rest.split_once('p') {
            Some((d, p)) => (d, p.parse().ok()?),
            None => (rest, 0),
        };
        let (controller, namespace) = disk.split_once('n')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|c| c.is_ascii_digit());
        return (digits(controller) && digits(namespace)).then(|| (format!("nvme{disk}"), partition));
    }
    let prefix = ["xvd", "sd", "vd", "hd"].into_iter().find(|p| name.starts_with(p))?;
    let rest = &name[prefix.len()..];
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let (disk_letters, number) = rest.split_at(letters);
    if disk_letters.is_empty()
        || disk_letters.len() > 3
        || (!number.is_empty() && !number.bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let partition = if number.is_empty() { 0 } else { number.parse().ok()? };
    Some((format!("{prefix}{disk_letters}"), partition))
}

/// The position of a disk among its bus's disks, from its name: `xvda`/`sda`/`vda`/`hda` are
/// 0, `xvdb` 1, `xvdaa` 26; `nvme1n1` 1.
pub fn disk_index(disk: &str) -> Option<usize> {
    if let Some(rest) = disk.strip_prefix("nvme") {
        return rest.split_once('n')?.0.parse().ok();
    }
    let prefix = ["xvd", "sd", "vd", "hd"].into_iter().find(|p| disk.starts_with(p))?;
    let letters = &disk[prefix.len()..];
    if letters.is_empty() || letters.len() > 3 || !letters.bytes().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    // Linux's sd naming: a..z, then aa..zz (bijective base 26).
    Some(letters.bytes().fold(0usize, |n, c| n * 26 + usize::from(c - b'a' + 1)) - 1)
}

/// `/var//log/` → `/var/log`; `None` for relative paths and any `..` or `.` component, which
/// no sane fstab has and which would confuse ordering by depth.
pub fn normalize_mount_point(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.len() > 4096 {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == ".." || p.contains('\0')) || parts.len() > 64 {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_escapes_and_defaults() {
        let text = "# /etc/fstab\n\
                    UUID=5d0c35a5-70d4-4a4e-9a55-1f1f3c0a0002\t/\text4\terrors=remount-ro\t0\t1\n\
                    \n   # indented comment\n\
                    LABEL=My\\040Data /srv/my\\040data ext4\n\
                    /dev/xvda3 none swap sw 0 0\n\
                    lonely-field /x\n";
        let (entries, notes) = parse(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].line, 2);
        assert_eq!(entries[0].options, ["errors=remount-ro"]);
        assert_eq!(entries[1].spec, "LABEL=My Data");
        assert_eq!(entries[1].mount_point, "/srv/my data");
        assert_eq!(entries[1].options, ["defaults"]);
        assert_eq!(source(&entries[1].spec), Source::Label("My Data".into()));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("line 7"), "{notes:?}");
    }

    #[test]
    fn sources() {
        assert_eq!(source("UUID=\"abc\""), Source::Uuid("abc".into()));
        assert_eq!(source("/dev/disk/by-label/a\\x2fb"), Source::Label("a/b".into()));
        assert_eq!(source("PARTUUID=0a-01"), Source::PartUuid("0a-01".into()));
        assert_eq!(source("/dev/disk/by-partlabel/var"), Source::PartLabel("var".into()));
        assert_eq!(
            source("/dev/xvdb2"),
            Source::Device {
                disk: "xvdb".into(),
                partition: 2
            }
        );
        assert_eq!(
            source("/dev/nvme0n1p3"),
            Source::Device {
                disk: "nvme0n1".into(),
                partition: 3
            }
        );
        assert_eq!(
            source("/dev/mapper/vg-root"),
            Source::Other("/dev/mapper/vg-root".into())
        );
        assert_eq!(source("/dev/sd1"), Source::Other("/dev/sd1".into()));
        assert_eq!(source("server:/export"), Source::Other("server:/export".into()));
        assert_eq!(disk_index("xvda"), Some(0));
        assert_eq!(disk_index("sdb"), Some(1));
        assert_eq!(disk_index("xvdaa"), Some(26));
        assert_eq!(disk_index("nvme1n1"), Some(1));
        assert_eq!(disk_index("loop0"), None);
    }

    #[test]
    fn hostile_input_is_bounded() {
        assert_eq!(unescape("\\777\\0\\12x\\"), "\\777\\0\\12x\\");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(normalize_mount_point("/var//log/"), Some("/var/log".into()));
        assert_eq!(normalize_mount_point("/var/../etc"), None);
        assert_eq!(normalize_mount_point("var"), None);
        assert_eq!(normalize_mount_point("/"), Some("/".into()));
        let huge = "/dev/sda1 /a ext4\n".repeat(MAX_ENTRIES + 10);
        let (entries, notes) = parse(&huge);
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(notes.iter().any(|n| n.contains("ignored")));
        let long = format!("/dev/sda1 /{} ext4\n", "a".repeat(MAX_LINE));
        assert!(parse(&long).0.is_empty());
        assert_eq!(device_name("sdzzzz1"), None);
        assert_eq!(device_name("xvda99999999999"), None);
    }
}
