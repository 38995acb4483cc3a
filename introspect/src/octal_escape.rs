//! The octal escaping of `/proc/mounts`, `/proc/self/mountinfo`, `/proc/swaps` and fstab: the
//! kernel's `mangle()`/`seq_path()` write space, tab, newline and backslash as `\ooo` so that
//! names cannot break the space-separated fields; libmount and fstab readers undo any `\ooo`.
//! One pair for every reader and writer of those files, so a name is escaped exactly once.

/// What the kernel escapes in mount and swap names (`" \t\n\\"` in fs/proc_namespace.c).
const SPECIAL: &[char] = &[' ', '\t', '\n', '\\'];

/// `name` as the kernel prints it in `/proc/mounts`: `/mnt/a b` is `/mnt/a\040b`.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if SPECIAL.contains(&c) {
            out.push_str(&format!("\\{:03o}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The bytes a field of those files names: each `\` followed by three octal digits of at
/// most `\377` is that byte; anything else, including a lone or trailing `\`, stays as written.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let byte = field
            .get(i + 1..i + 4)
            .filter(|_| field[i] == b'\\')
            .filter(|d| d[0] <= b'3' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| (d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
        match byte {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_print_as_the_kernel_prints_them() {
        assert_eq!(escape("/mnt/a b"), "/mnt/a\\040b");
        assert_eq!(escape("t\tn\nb\\"), "t\\011n\\012b\\134");
        assert_eq!(escape("/ünï/x"), "/ünï/x");
        for name in [
            "/mnt/a b",
            "tab\there",
            "new\nline",
            "back\\slash",
            "\\040",
            "",
            " \t\n\\",
        ] {
            assert_eq!(unescape(escape(name).as_bytes()), name.as_bytes(), "{name:?}");
        }
        // Only \000 to \377 are bytes; the rest is kept as written.
        assert_eq!(unescape(b"\\777\\0\\12x\\"), b"\\777\\0\\12x\\");
        assert_eq!(unescape(b"\\376\\134"), b"\xfe\\");
    }
}
