//! Domains named by id: their vif names read from xenstore (a fake one here), a dormouse
//! killed while isolating, and the vif hotplug hook that isolates pending domains first.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Lab, in_ns, run, text};
use crate::dormouse_bin;

/// A fake xenstore: `xenstore-read` and `xenstore-list` over a directory tree where node
/// /a/b is the directory ROOT/a/b and its value the file ROOT/a/b/.value; relative paths are
/// dom0's (/local/domain/0/...), as with the real tools run in dom0. A node with a `.slow`
/// file makes `xenstore-list` hang after touching ROOT/.listing.
fn fake_xenstore(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("xenstore");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let common = format!(
        "#!/bin/sh\nroot={}\np=$1\ncase $p in /*) ;; *) p=/local/domain/0/$p ;; esac\nd=$root$p\n",
        root.display()
    );
    let tools = [
        (
            "xenstore-read",
            "[ -f \"$d/.value\" ] || { echo \"xenstore-read: couldn't read path $1\" >&2; exit 1; }\nprintf '%s\\n' \"$(cat \"$d/.value\")\"\n",
        ),
        (
            "xenstore-list",
            "[ -d \"$d\" ] || { echo \"xenstore-list: couldn't list path $1\" >&2; exit 1; }\nif [ -f \"$d/.slow\" ]; then touch \"$root/.listing\"; sleep 60; fi\nls -1 \"$d\"\n",
        ),
    ];
    for (name, body) in tools {
        let path = bin.join(name);
        std::fs::write(&path, format!("{common}{body}")).unwrap();
        run("chmod", &["+x", path.to_str().unwrap()]);
    }
    (root, bin)
}

fn xs_write(root: &Path, key: &str, value: &str) {
    let dir = root.join(key.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".value"), value).unwrap();
}

/// PATH with the fake xenstore tools and the dormouse binary first.
fn fake_path(bin: &Path) -> String {
    let dormouse_dir = Path::new(dormouse_bin()).parent().unwrap();
    format!(
        "{}:{}:{}",
        bin.display(),
        dormouse_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn isolate_domain_reads_its_vif_names_from_xenstore_and_survives_a_killed_dormouse() {
    let mut lab = Lab::new("xs");
    let dom0 = lab.netns("dom0");
    let (root, bin) = fake_xenstore(lab.dir.path());
    xs_write(&root, "/local/domain/0/backend/vif/7/0/mac", "00:16:3e:00:00:07");
    xs_write(&root, "/local/domain/0/backend/vif/7/1/vifname", "web1-eth1");
    xs_write(&root, "/local/domain/0/backend/vif/9/0/mac", "00:16:3e:00:00:09");
    std::fs::write(root.join("local/domain/0/backend/vif/9/.slow"), "").unwrap();
    let path = fake_path(&bin);
    let path_var = format!("PATH={path}");
    let with_path = |args: &[&str]| {
        let mut all = vec!["env", path_var.as_str(), dormouse_bin()];
        all.extend_from_slice(args);
        in_ns(&dom0, &all)
    };

    let out = with_path(&["isolate", "--domain", "7", "--allow", "10.0.0.1:7878"]);
    assert!(out.status.success(), "{}", text(&out));
    let names: Vec<String> = lab
        .isolated(&dom0)
        .iter()
        .map(|v| v["vif"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "vif7.0",
            "vif7.0-emu",
            "vif7.1",
            "vif7.1-emu",
            "web1-eth1",
            "web1-eth1-emu"
        ]
    );

    let out = with_path(&["isolate", "--domain", "8"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xenstore-list /local/domain/0/backend/vif/8"),
        "{}",
        text(&out)
    );

    // A dormouse killed in the middle of isolating domain 9 (it waits on xenstore) changes
    // nothing: domain 7 stays isolated, domain 9 gets no half-installed rules.
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &dom0,
            "env",
            &path_var,
            dormouse_bin(),
            "isolate",
            "--domain",
            "9",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.join(".listing").exists() {
        assert!(Instant::now() < deadline, "dormouse never asked xenstore for domain 9");
        std::thread::sleep(Duration::from_millis(50));
    }
    run("kill", &["-KILL", &child.id().to_string()]);
    let _ = child.wait();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let after = lab.isolated(&dom0);
    assert_eq!(after.len(), 6, "{after:?}");
    assert!(
        after.iter().all(|v| v["allow"] == serde_json::json!(["10.0.0.1:7878"])),
        "{after:?}"
    );

    let out = with_path(&["release", "--domain", "7", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let released: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(released["released"].as_array().unwrap().len(), 6, "{released}");
    assert!(lab.isolated(&dom0).is_empty());
}

#[test]
fn vif_hook_isolates_pending_domains_before_the_stock_script_runs() {
    let mut lab = Lab::new("hk");
    let dom0 = lab.netns("dom0");
    let (root, bin) = fake_xenstore(lab.dir.path());
    let scripts = lab.dir.path().join("etc-xen-scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let hook = scripts.join("vif-dormouse");
    std::fs::copy(dormouse_tests::workspace_root().join("scripts/vif-dormouse"), &hook).unwrap();
    std::os::unix::fs::symlink("vif-dormouse", scripts.join("vif-dormouse-route")).unwrap();
    // Stock scripts that record how they were called and what was isolated at that moment.
    let log = lab.dir.path().join("stock.log");
    for stock in ["vif-bridge", "vif-route"] {
        let path = scripts.join(stock);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$(basename \"$0\") $* script=$script isolated=$(dormouse isolate --list | cut -d: -f1 | tr '\\n' ' ')\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        run("chmod", &["+x", path.to_str().unwrap()]);
    }
    let uuid7 = "5f0c6d3a-7a5e-4a53-9d0e-000000000007";
    xs_write(&root, "/local/domain/7/vm", &format!("/vm/{uuid7}"));
    xs_write(
        &root,
        &format!("/dormouse/pending/{uuid7}"),
        "10.77.0.1:7878 [fd77::1]:7878",
    );
    xs_write(&root, "/local/domain/0/backend/vif/7/1/vifname", "web1-eth1");
    xs_write(&root, "/local/domain/8/vm", "/vm/5f0c6d3a-7a5e-4a53-9d0e-000000000008");
    let uuid9 = "5f0c6d3a-7a5e-4a53-9d0e-000000000009";
    xs_write(&root, "/local/domain/9/vm", &format!("/vm/{uuid9}"));
    xs_write(&root, &format!("/dormouse/pending/{uuid9}"), "not-an-address");
    let path = fake_path(&bin);
    let hotplug = |script: &str, env: &[(&str, String)], args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &dom0, "env", "-i", &format!("PATH={path}")]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(scripts.join(script))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        (out, logged)
    };
    let xl_env = |vif: &'static str, devid: &str| -> Vec<(&'static str, String)> {
        let domid = vif.trim_start_matches("vif").split('.').next().unwrap();
        vec![
            ("XENBUS_PATH", format!("backend/vif/{domid}/{devid}")),
            ("XENBUS_TYPE", "vif".into()),
            ("vif", vif.into()),
            ("script", "/etc/xen/scripts/vif-dormouse".into()),
        ]
    };

    // Pending domain 7: isolated before vif-bridge runs, with the pending key's allowances.
    let env = xl_env("vif7.0", "0");
    let (out, logged) = hotplug("vif-dormouse", &env, &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        logged.trim(),
        format!(
            "vif-bridge online type_if=vif script={}/vif-bridge isolated=vif7.0",
            scripts.display()
        )
    );
    let listed = lab.isolated(&dom0);
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["10.77.0.1:7878", "[fd77::1]:7878"])
    );
    // Its second vif, renamed by vifname, through the vif-route flavour; both names isolated.
    let env = xl_env("vif7.1", "1");
    let (out, logged) = hotplug("vif-dormouse-route", &env, &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-route online type_if=vif"), "{logged}");
    assert!(logged.contains("isolated=vif7.0 vif7.1 web1-eth1 "), "{logged}");
    // The HVM emulated twin comes with `add type_if=tap` and INTERFACE.
    let mut env = xl_env("vif7.0", "0");
    env.push(("INTERFACE", "vif7.0-emu".into()));
    let (out, logged) = hotplug("vif-dormouse", &env, &["add", "type_if=tap"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        logged.contains("isolated=vif7.0 vif7.0-emu vif7.1 web1-eth1 "),
        "{logged}"
    );
    // Going offline leaves the isolation: only `dormouse release` lifts it.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif7.0", "0"), &["offline", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-bridge offline type_if=vif"), "{logged}");
    assert_eq!(lab.isolated(&dom0).len(), 4);

    // Domain 8 is not pending: plain vif-bridge, nothing isolated.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif8.0", "0"), &["online", "type_if=vif"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(logged.starts_with("vif-bridge online type_if=vif"), "{logged}");
    assert!(!lab.isolated(&dom0).iter().any(|v| v["vif"] == "vif8.0"));

    // Domain 9 is pending but cannot be isolated: the stock script never runs, the hotplug fails.
    let (out, logged) = hotplug("vif-dormouse", &xl_env("vif9.0", "0"), &["online", "type_if=vif"]);
    assert!(!out.status.success());
    assert_eq!(logged, "", "the stock script ran for a vif that could not be isolated");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not be isolated; not bringing it up"),
        "{}",
        text(&out)
    );
    // When xenstore cannot tell whether a domain is pending, its vif is isolated with nothing
    // allowed and then brought up: domain 10's pending node is listed but cannot be read,
    // domain 11 has no vm path at all.
    let uuid10 = "5f0c6d3a-7a5e-4a53-9d0e-000000000010";
    xs_write(&root, "/local/domain/10/vm", &format!("/vm/{uuid10}"));
    std::fs::create_dir_all(root.join(format!("dormouse/pending/{uuid10}"))).unwrap();
    for (vif, why) in [
        ("vif10.0", format!("cannot read /dormouse/pending/{uuid10}")),
        ("vif11.0", "cannot read /local/domain/11/vm".to_owned()),
    ] {
        let (out, logged) = hotplug("vif-dormouse", &xl_env(vif, "0"), &["online", "type_if=vif"]);
        assert!(out.status.success(), "{vif}: {}", text(&out));
        let isolated_then = logged.split("isolated=").nth(1).unwrap_or_default();
        assert!(
            isolated_then.split_whitespace().any(|name| name == vif),
            "{vif} was not isolated when the stock script ran: {logged}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&why),
            "{vif}: {}",
            text(&out)
        );
        let entry = lab
            .isolated(&dom0)
            .into_iter()
            .find(|v| v["vif"] == vif)
            .unwrap_or_else(|| panic!("{vif} is not isolated"));
        assert_eq!(entry["allow"], serde_json::json!([]), "{vif}: {entry}");
    }
}
