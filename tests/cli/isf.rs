//! `dormouse isf`: a Volatility 3 profile made from the guest's RAM alone, checked by running
//! Volatility itself (the test bed's pinned copy) on the same image and comparing its process
//! list with what was captured inside the guest.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use dormouse_tests::{decompressed, testbed, xen_fixtures};
use serde_json::Value;

use crate::dormouse_bin;

/// (pid, comm) of processes.
type Processes = BTreeSet<(u64, String)>;

/// (pid, comm) of the thread-group leaders Volatility's `linux.pslist` reports, run with the
/// profiles under `symbols` on `image`.
fn volatility_pslist(vol: &Path, symbols: &Path, image: &Path) -> Processes {
    // A cache of its own: Volatility's shared one is not safe for concurrent runs, and would
    // remember profiles of earlier runs whose files are gone.
    let cache = symbols.with_file_name("volatility-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let out = Command::new(vol)
        .args(["-q", "--offline", "-r", "json", "--cache-path"])
        .arg(&cache)
        .arg("-s")
        .arg(symbols)
        .arg("-f")
        .arg(image)
        .arg("linux.pslist.PsList")
        .output()
        .expect("run Volatility 3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vol linux.pslist on {} failed: {}\n{stdout}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("vol -r json printed no JSON list ({e}): {stdout}"));
    rows.iter()
        .map(|r| (r["PID"].as_u64().unwrap(), r["COMM"].as_str().unwrap().to_owned()))
        .collect()
}

/// The ground truth's thread-group leaders as (pid, comm), split into the user processes
/// Volatility must list and its zombies: pslist leaves out a task whose `nsproxy` is gone,
/// which is every zombie's (`exit_task_namespaces`).
fn truth_processes(truth: &Value) -> (Processes, Processes) {
    let mut live = BTreeSet::new();
    let mut zombies = BTreeSet::new();
    for p in truth["processes"].as_array().unwrap() {
        if p["kernel_thread"].as_bool().unwrap() || p["pid"] != p["tgid"] {
            continue;
        }
        let entry = (p["pid"].as_u64().unwrap(), p["comm"].as_str().unwrap().to_owned());
        if p["state"] == "Z" {
            zombies.insert(entry);
        } else {
            live.insert(entry);
        }
    }
    (live, zombies)
}

/// Makes the ISF of `image` with `dormouse isf` into `DIR/linux/`, checks what it reports,
/// runs Volatility with it, and compares the process list with the guest's own.
fn isf_lists_the_guest_processes(image: &Path, truth: &Value, release: &str) {
    let Some(tb) = testbed("isf_lists_the_guest_processes") else {
        return;
    };
    let vol = tb.volatility.unwrap_or_else(|| {
        panic!("the test bed has no Volatility 3: build it with `scripts/make-fixtures --only volatility`")
    });
    let work = tempfile::tempdir().unwrap();
    let isf = work.path().join("symbols/linux/guest.json.xz");
    let out = Command::new(dormouse_bin())
        .arg("isf")
        .arg(image)
        .arg("-o")
        .arg(&isf)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dormouse isf {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["release"], release, "{report}");
    assert_eq!(report["bytes"].as_u64(), Some(std::fs::metadata(&isf).unwrap().len()));
    let types_from = report["types_from"].as_str().unwrap();
    let symbols_from = report["symbols_from"].as_str().unwrap();
    assert!(types_from.contains("in RAM"), "types not from RAM: {types_from}");
    assert!(
        symbols_from.contains("kallsyms in RAM"),
        "symbols not from RAM: {symbols_from}"
    );

    let listed = volatility_pslist(&vol.vol, &work.path().join("symbols"), image);
    let (live, zombies) = truth_processes(truth);
    for z in &zombies {
        assert!(
            !listed.contains(z),
            "Volatility now lists zombie {z:?}: update truth_processes"
        );
    }
    assert!(!live.is_empty(), "the ground truth lists no user process");
    // Same pid with the same name; a process started after the guest's walk may be extra.
    let missing: Vec<_> = live.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "Volatility {} with dormouse's ISF lists {} tasks but misses these processes of the guest: {missing:?}",
        vol.version,
        listed.len()
    );
    // Kernel threads come and go between the guest's walk and the dump; the first two never do.
    for (pid, comm) in [(1, None), (2, Some("kthreadd"))] {
        assert!(
            listed
                .iter()
                .any(|(p, c)| *p == pid && comm.is_none_or(|comm| c == comm)),
            "Volatility lists no pid {pid}: {listed:?}"
        );
    }
}

#[test]
fn isf_from_ram_lets_volatility_list_the_processes_of_the_4level_qemu_dump() {
    let Some(fixtures) = xen_fixtures("isf_from_ram_lets_volatility_list_the_processes_of_the_4level_qemu_dump") else {
        return;
    };
    let dump = decompressed(&fixtures, "qemu-6.1-4level/dump.elf");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("qemu-6.1-4level/ground-truth.json")).unwrap())
            .unwrap();
    let release = truth["uname"]["release"].as_str().unwrap().to_owned();
    isf_lists_the_guest_processes(&dump, &truth, &release);
}

#[test]
fn isf_from_ram_lets_volatility_list_the_processes_of_the_test_bed_dump() {
    let Some(tb) = testbed("isf_from_ram_lets_volatility_list_the_processes_of_the_test_bed_dump") else {
        return;
    };
    let dump = tb.memdump.dir.join("dump.elf");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(tb.memdump.dir.join("ground-truth.json")).unwrap()).unwrap();
    isf_lists_the_guest_processes(&dump, &truth, &tb.kernel.release);
}
