//! Capture semantics on a real overlayfs (root): changes made through a mounted overlay with
//! dormouse's options, then read back from the upper layer.

// Helpers of these tests, like the tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use emulator::capture::{
    BaseKind, CaptureLayer, CaptureOptions, ChangeSet, EntryKind, capture, list_after, open_after, read_versions,
};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a value buffer of the given length.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A v2 file capability: CAP_NET_BIND_SERVICE permitted and effective.
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

struct Overlay<'a>(&'a Path);

impl Drop for Overlay<'_> {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn entry<'a>(set: &'a ChangeSet, path: &str) -> &'a emulator::capture::Entry {
    set.entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not captured: {:#?}", set.entries))
}

#[test]
fn upper_layer_reads_with_overlay_semantics() {
    // Not /tmp: a disk filesystem, like a --keep directory.
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let (lower, upper, workdir, merged) = (
        work.path().join("lower"),
        work.path().join("upper"),
        work.path().join("work"),
        work.path().join("merged"),
    );
    for d in [&lower, &upper, &workdir, &merged] {
        fs::create_dir(d).unwrap();
    }
    for d in ["etc", "dir_rm/sub", "opq", "usr/bin", "keep", "tmp", "var/cache/apt"] {
        fs::create_dir_all(lower.join(d)).unwrap();
    }
    fs::write(lower.join("etc/a"), "old").unwrap();
    fs::write(lower.join("etc/gone"), "gone!").unwrap();
    fs::write(lower.join("dir_rm/sub/f"), "x").unwrap();
    fs::write(lower.join("opq/old-child"), "old child").unwrap();
    fs::write(lower.join("usr/bin/tool"), "tool").unwrap();
    fs::write(lower.join("keep/x"), "kept").unwrap();
    fs::write(lower.join("etc/was-file"), "file").unwrap();
    symlink("a", lower.join("etc/link")).unwrap();

    let options = format!(
        "lowerdir={},upperdir={},workdir={},metacopy=off,redirect_dir=off,index=off,xino=off",
        lower.display(),
        upper.display(),
        workdir.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .expect("mounting overlayfs (needs root)");
    let guard = Overlay(&merged);
    let m = |p: &str| merged.join(p);
    fs::write(m("etc/a"), "new").unwrap();
    fs::remove_file(m("etc/gone")).unwrap();
    fs::remove_dir_all(m("dir_rm")).unwrap();
    fs::remove_dir_all(m("opq")).unwrap();
    fs::create_dir(m("opq")).unwrap();
    fs::write(m("opq/new"), "new child").unwrap();
    fs::remove_file(m("etc/was-file")).unwrap();
    fs::create_dir(m("etc/was-file")).unwrap();
    fs::write(m("etc/was-file/inner"), "in").unwrap();
    fs::create_dir(m("newdir")).unwrap();
    fs::write(m("newdir/f"), "linked").unwrap();
    fs::hard_link(m("newdir/f"), m("newdir/g")).unwrap();
    fs::hard_link(m("newdir/f"), m("newdir/a-first")).unwrap();
    symlink("../etc/a", m("newdir/l")).unwrap();
    nix::unistd::mkfifo(&m("newdir/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    fs::remove_file(m("etc/link")).unwrap();
    symlink("gone", m("etc/link")).unwrap();
    setxattr(&m("usr/bin/tool"), "security.capability", &CAPABILITY);
    setxattr(&m("newdir/f"), "user.dormouse", b"value");
    fs::write(m("tmp/scratch"), "12345").unwrap();
    fs::write(m("var/cache/apt/pkgcache.bin"), vec![0u8; 1000]).unwrap();
    // What the kernel's overlay shows, for the readers of the view after the run below.
    let dirs = ["/", "/etc", "/opq", "/dir_rm", "/newdir", "/keep", "/etc/was-file"];
    let merged_names: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            let mut names: Vec<String> = match fs::read_dir(merged.join(d.trim_start_matches('/'))) {
                Ok(read) => read
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => Vec::new(),
            };
            names.sort();
            names
        })
        .collect();
    let files = [
        "/etc/a",
        "/etc/gone",
        "/opq/new",
        "/opq/old-child",
        "/keep/x",
        "/etc/link",
    ];
    let merged_files: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| {
            let p = merged.join(f.trim_start_matches('/'));
            fs::symlink_metadata(&p)
                .ok()
                .filter(|m| m.is_file())
                .map(|_| fs::read(&p).unwrap())
        })
        .collect();
    drop(guard);

    // The premise: the kernel marked opaque both the directory replacing a guest directory and
    // the one replacing a guest file (depending on the kernel, plain new directories in a
    // merged directory are marked too).
    for dir in ["etc/was-file", "opq"] {
        let p = CString::new(upper.join(dir).as_os_str().as_bytes()).unwrap();
        let mut value = [0u8; 8];
        // SAFETY: NUL-terminated strings and a writable buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1, "{dir} not opaque in the upper layer");
        assert_eq!(value[0], b'y');
    }

    let layers = [CaptureLayer {
        guest_path: "/".into(),
        upper: upper.clone(),
        lower: lower.clone(),
    }];
    let set = capture(&layers, &CaptureOptions::defaults(&[])).unwrap();

    assert_eq!(set.removals, ["/dir_rm", "/etc/gone"]);
    // Only /opq hides a guest directory; /etc/was-file is opaque but replaces a file.
    assert_eq!(set.opaque_dirs, ["/opq"]);
    assert_eq!(entry(&set, "/etc/was-file").kind, EntryKind::Dir);
    assert_eq!(
        set.base.iter().find(|b| b.path == "/etc/was-file").map(|b| b.kind),
        Some(BaseKind::File)
    );
    let xattrs = |p: &str| -> Vec<String> { entry(&set, p).xattrs.iter().map(|x| x.name.clone()).collect() };
    assert_eq!(xattrs("/etc/was-file"), Vec::<String>::new(), "overlay xattrs leaked");
    for e in &set.entries {
        assert!(
            e.xattrs.iter().all(|x| !x.name.starts_with("trusted.overlay.")),
            "{}: {:?}",
            e.path,
            e.xattrs
        );
    }
    let tool = entry(&set, "/usr/bin/tool");
    assert_eq!(tool.xattrs.len(), 1);
    assert_eq!(tool.xattrs[0].name, "security.capability");
    assert_eq!(tool.xattrs[0].value, CAPABILITY);
    assert_eq!(xattrs("/newdir/f"), ["user.dormouse"]);

    // Hardlinks: the first name in path order carries the data.
    match &entry(&set, "/newdir/a-first").kind {
        EntryKind::File { size, sha256, .. } => {
            assert_eq!(*size, 6);
            assert_eq!(*sha256, sha(b"linked"));
        }
        other => panic!("/newdir/a-first: {other:?}"),
    }
    for name in ["/newdir/f", "/newdir/g"] {
        assert_eq!(
            entry(&set, name).kind,
            EntryKind::Hardlink {
                target: "/newdir/a-first".into()
            }
        );
    }
    assert_eq!(
        entry(&set, "/newdir/l").kind,
        EntryKind::Symlink {
            target: "../etc/a".into()
        }
    );
    assert_eq!(entry(&set, "/newdir/fifo").kind, EntryKind::Fifo);
    assert_eq!(entry(&set, "/newdir/fifo").mode, 0o640);
    match &entry(&set, "/etc/a").kind {
        EntryKind::File { sha256, .. } => assert_eq!(*sha256, sha(b"new")),
        other => panic!("/etc/a: {other:?}"),
    }
    let paths: Vec<&str> = set.entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries not in path order");
    assert!(
        !paths.iter().any(|p| p.starts_with("/tmp") || p.ends_with(".bin")),
        "{paths:?}"
    );

    // The guest's originals of what is replaced or removed; nothing for new paths.
    let base = |p: &str| set.base.iter().find(|b| b.path == p);
    let a = base("/etc/a").expect("base of /etc/a");
    assert_eq!(
        (a.kind, a.size, a.sha256.clone()),
        (BaseKind::File, 3, Some(sha(b"old")))
    );
    let gone = base("/etc/gone").expect("base of /etc/gone");
    assert_eq!((gone.size, gone.sha256.clone()), (5, Some(sha(b"gone!"))));
    let link = base("/etc/link").expect("base of /etc/link");
    assert_eq!((link.kind, link.sha256.clone()), (BaseKind::Symlink, Some(sha(b"a"))));
    assert_eq!(base("/dir_rm").map(|b| b.kind), Some(BaseKind::Dir));
    assert_eq!(base("/opq").map(|b| b.kind), Some(BaseKind::Dir));
    assert!(base("/newdir").is_none() && base("/newdir/f").is_none());
    assert!(
        base("/dir_rm/sub").is_none(),
        "one whiteout stands for the whole directory"
    );

    // Exclusions, reported with what they weighed.
    let excluded: Vec<(&str, u64)> = set.excluded.iter().map(|e| (e.path.as_str(), e.bytes)).collect();
    assert_eq!(excluded, [("/tmp", 5), ("/var/cache/apt/pkgcache.bin", 1000)]);

    // Before/after reads through the overlay rules.
    let v = read_versions(&layers, "/etc/a", 1 << 20).unwrap();
    assert_eq!(
        (v.before.as_deref(), v.after.as_deref()),
        (Some(&b"old"[..]), Some(&b"new"[..]))
    );
    let v = read_versions(&layers, "/etc/gone", 1 << 20).unwrap();
    assert_eq!((v.before.is_some(), v.after), (true, None));
    let v = read_versions(&layers, "/opq/old-child", 1 << 20).unwrap();
    assert_eq!(
        (v.before.is_some(), v.after),
        (true, None),
        "hidden by the opaque directory"
    );
    let v = read_versions(&layers, "/dir_rm/sub/f", 1 << 20).unwrap();
    assert_eq!(v.after, None, "under a removed directory");
    let v = read_versions(&layers, "/keep/x", 1 << 20).unwrap();
    assert_eq!(v.after.as_deref(), Some(&b"kept"[..]));
    assert!(read_versions(&layers, "/etc/a", 2).is_err(), "limit not enforced");

    // Directory listings and files after the run, from the layers: what the overlay showed.
    for (dir, want) in dirs.iter().zip(&merged_names) {
        assert_eq!(&list_after(&layers, dir).unwrap(), want, "{dir}");
    }
    for (file, want) in files.iter().zip(&merged_files) {
        let got = open_after(&layers, file).unwrap().map(|(mut f, _)| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).unwrap();
            bytes
        });
        assert_eq!(&got, want, "{file}");
    }
}
