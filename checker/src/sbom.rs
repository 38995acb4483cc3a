//! A check as a CycloneDX 1.5 SBOM (JSON): the dormant VM's installed packages with their
//! package URLs, the kernel running in its memory image, and what a check found about them.
//!
//! - every installed package is a component: `pkg:deb/<os id>/NAME@VERSION?arch=A&distro=ID-VER`
//!   and `pkg:rpm/<os id>/NAME@VERSION-RELEASE?arch=A&distro=ID-VER&epoch=E` (purl-spec's deb
//!   and rpm types, qualifiers in key order, the namespace from the guest's os-release);
//! - the distribution (os-release) and, with a memory image, the running kernel are
//!   components of type `operating-system`;
//! - an outdated package carries `dormouse:update:*` properties (candidate, priority, the
//!   suites or repositories offering it) and a running process whose executable it owns a
//!   `dormouse:used-by-process` property; an update that a repository's `updateinfo.xml`
//!   names in a security advisory is also a `vulnerabilities` entry under the advisory's id.
//!   apt's indices name no advisory (a bookworm-security update is known to be a security
//!   update, not which DSA or CVE it fixes), so Debian updates stay properties.
//!
//! Property names follow CycloneDX's guidance: namespaced by the tool, `dormouse:`, with `:`
//! separating levels.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::report::{Finding, Priority, Report};
use crate::{Inventory, RunningKernel};

pub const SPEC_VERSION: &str = "1.5";
pub const SCHEMA_URL: &str = "http://cyclonedx.org/schema/bom-1.5.schema.json";

/// Who made the BOM, and its identity.
#[derive(Debug, Clone)]
pub struct BomMeta<'a> {
    pub tool_name: &'a str,
    pub tool_version: &'a str,
    /// `urn:uuid:` + this, the BOM's serialNumber.
    pub serial: uuid::Uuid,
}

impl<'a> BomMeta<'a> {
    /// A BOM by `tool` with a fresh random serial number.
    pub fn new(tool_name: &'a str, tool_version: &'a str) -> Self {
        Self {
            tool_name,
            tool_version,
            serial: uuid::Uuid::new_v4(),
        }
    }
}

/// A package URL's string form: the purl-spec's percent-encoding, everything but
/// `A-Za-z0-9.-_~` and `:` encoded.
fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:TYPE/NAMESPACE/NAME@VERSION?k=v&...`, qualifiers sorted by key, empty values left out.
pub fn purl(kind: &str, namespace: &str, name: &str, version: &str, qualifiers: &[(&str, &str)]) -> String {
    let mut s = format!(
        "pkg:{kind}/{}/{}@{}",
        purl_encode(&namespace.to_ascii_lowercase()),
        purl_encode(name),
        purl_encode(version)
    );
    let mut q: Vec<_> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort_by_key(|(k, _)| *k);
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&purl_encode(v));
    }
    s
}

/// The purl namespace (vendor) and `distro` qualifier from os-release: `debian`, `debian-12`.
fn vendor_and_distro(inv: &Inventory) -> (String, String) {
    let id = inv
        .os
        .as_ref()
        .and_then(|o| o.id.as_deref())
        .filter(|i| !i.is_empty())
        .unwrap_or("unknown")
        .to_ascii_lowercase();
    let distro = match inv.os.as_ref().and_then(|o| o.version_id.as_deref()) {
        Some(v) if !v.is_empty() => format!("{id}-{v}"),
        _ => id.clone(),
    };
    (id, distro)
}

/// RFC 3339 UTC time of seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn prop(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

/// One package before it becomes a component.
struct Pkg {
    manager: &'static str,
    name: String,
    arch: String,
    version: String,
    purl: String,
    source: Option<String>,
    license: Option<String>,
    extra: Vec<Value>,
}

fn packages(inv: &Inventory) -> Vec<Pkg> {
    let (vendor, distro) = vendor_and_distro(inv);
    let mut out = Vec::with_capacity(inv.debs.len() + inv.rpms.len());
    for p in &inv.debs {
        let version = p.version.text.clone();
        let mut extra = Vec::new();
        if p.state != "installed" {
            extra.push(prop("dormouse:package:state", &p.state));
        }
        if p.want == "hold" {
            extra.push(prop("dormouse:package:hold", "true"));
        }
        out.push(Pkg {
            manager: "dpkg",
            purl: purl(
                "deb",
                &vendor,
                &p.name.to_ascii_lowercase(),
                &version,
                &[("arch", &p.arch), ("distro", &distro)],
            ),
            name: p.name.clone(),
            arch: p.arch.clone(),
            version,
            source: p.source.clone(),
            license: None,
            extra,
        });
    }
    for p in &inv.rpms {
        let epoch = p.epoch.map(|e| e.to_string()).unwrap_or_default();
        out.push(Pkg {
            manager: "rpm",
            purl: purl(
                "rpm",
                &vendor,
                &p.name,
                &format!("{}-{}", p.version, p.release),
                &[("arch", &p.arch), ("distro", &distro), ("epoch", &epoch)],
            ),
            name: p.name.clone(),
            arch: p.arch.clone(),
            version: p.evr(),
            source: p.sourcerpm.clone(),
            license: p.license.clone().filter(|l| !l.is_empty()),
            extra: Vec::new(),
        });
    }
    out
}

/// Whether `f` (an update the check found) is the update of `p`.
fn finding_of(p: &Pkg, f: &Finding) -> bool {
    if p.name != f.name {
        return false;
    }
    match p.manager {
        "dpkg" => p.arch == f.arch && p.version == f.installed,
        // rpm prints the installed EVR with a zero epoch left out, and the finding names the
        // candidate's arch, which may be noarch where the installed one is not (or back).
        _ => rpm_shown(&p.version) == f.installed && (p.arch == f.arch || p.arch == "noarch" || f.arch == "noarch"),
    }
}

/// `0:1-2` as dnf shows it: `1-2`.
fn rpm_shown(evr: &str) -> &str {
    evr.strip_prefix("0:").unwrap_or(evr)
}

fn kernel_component(k: &RunningKernel, inv: &Inventory) -> Value {
    let mut props = vec![
        prop("dormouse:kernel:release", &k.release),
        prop("dormouse:kernel:version", &k.version),
        prop("dormouse:kernel:banner", k.banner.trim_end()),
    ];
    if !k.machine.is_empty() {
        props.push(prop("dormouse:kernel:machine", &k.machine));
    }
    // Debian names the kernel's package after its release.
    let package = format!("linux-image-{}", k.release);
    let installed = inv.debs.iter().any(|p| p.name == package);
    props.push(prop("dormouse:kernel:package", package));
    props.push(prop("dormouse:kernel:package-installed", installed.to_string()));
    json!({
        "type": "operating-system",
        "bom-ref": "kernel",
        "name": "linux",
        "version": k.release,
        "description": k.banner.trim_end(),
        "properties": props,
    })
}

/// The SBOM of one checked VM.
pub fn cyclonedx(report: &Report, inv: &Inventory, meta: &BomMeta<'_>) -> Value {
    let pkgs = packages(inv);
    let mut components = Vec::with_capacity(pkgs.len() + 2);
    if let Some(os) = &inv.os {
        let mut c = json!({
            "type": "operating-system",
            "bom-ref": "os",
            "name": os.id.clone().unwrap_or_else(|| "unknown".into()),
        });
        if let Some(v) = &os.version_id {
            c["version"] = json!(v);
        }
        if let Some(p) = &os.pretty_name {
            c["description"] = json!(p);
        }
        components.push(c);
    }
    if let Some(k) = &inv.kernel {
        components.push(kernel_component(k, inv));
    }

    let procs = report.processes.as_deref().unwrap_or_default();
    let mut refs_used: HashMap<String, usize> = HashMap::new();
    // Advisory id → (priority-ordered) refs of the components it affects, and a candidate.
    let mut advisories: BTreeMap<&str, Vec<(String, &Finding)>> = BTreeMap::new();
    for p in &pkgs {
        // bom-refs are unique in a BOM; two installed packages with one purl (never with
        // dpkg, possible with a broken rpm database) get a suffix.
        let n = refs_used.entry(p.purl.clone()).or_insert(0);
        *n += 1;
        let bom_ref = if *n == 1 {
            p.purl.clone()
        } else {
            format!("{}#{n}", p.purl)
        };
        let mut props = vec![
            prop("dormouse:package:manager", p.manager),
            prop("dormouse:package:arch", &p.arch),
        ];
        if let Some(s) = &p.source {
            props.push(prop("dormouse:package:source", s));
        }
        props.extend(p.extra.iter().cloned());
        if let Some(f) = report.upgrades.iter().find(|f| finding_of(p, f)) {
            props.push(prop("dormouse:update:candidate", &f.candidate));
            props.push(prop(
                "dormouse:update:priority",
                match f.priority {
                    Priority::Security => "security",
                    Priority::Normal => "normal",
                },
            ));
            props.push(prop(
                "dormouse:update:security",
                (f.priority == Priority::Security).to_string(),
            ));
            for s in &f.suites {
                props.push(prop("dormouse:update:suite", s));
            }
            for a in &f.advisories {
                props.push(prop("dormouse:update:advisory", a));
                advisories.entry(a).or_default().push((bom_ref.clone(), f));
            }
            for hit in procs.iter().filter(|h| h.package == p.name) {
                props.push(prop(
                    "dormouse:used-by-process",
                    format!("pid={} comm={} exe={}", hit.pid, hit.comm, hit.exe),
                ));
            }
        }
        let mut c = json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": props,
        });
        if let Some(l) = &p.license {
            c["licenses"] = json!([{ "license": { "name": l } }]);
        }
        components.push(c);
    }

    let mut vm_props = vec![prop("dormouse:vm:disk", &report.disk)];
    if let Some(k) = &inv.kernel {
        if !k.hostname.is_empty() {
            vm_props.push(prop("dormouse:vm:hostname", &k.hostname));
        }
        if let Some(n) = &k.domain_name {
            vm_props.push(prop("dormouse:vm:domain-name", n));
        }
        if let Some(u) = &k.domain_uuid {
            vm_props.push(prop("dormouse:vm:domain-uuid", u));
        }
    }
    let mut meta_props = vec![
        prop("dormouse:check:package-manager", &report.package_manager),
        prop("dormouse:check:installed", report.installed.to_string()),
        prop("dormouse:check:updates:security", report.counts.security.to_string()),
        prop("dormouse:check:updates:normal", report.counts.normal.to_string()),
        prop(
            "dormouse:check:processes",
            if report.processes.is_some() {
                "from the memory image"
            } else {
                "not checked (no memory image)"
            },
        ),
    ];
    for r in &report.repositories {
        meta_props.push(prop(
            "dormouse:check:repository",
            format!(
                "{} {} [{}]{}",
                r.uri,
                r.suite,
                r.from,
                r.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ),
        ));
    }
    for w in &report.warnings {
        meta_props.push(prop("dormouse:check:warning", w));
    }

    let mut bom = json!({
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": format!("urn:uuid:{}", meta.serial),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(report.checked_at),
            "lifecycles": [{ "phase": "operations" }],
            "tools": {
                "components": [{
                    "type": "application",
                    "name": meta.tool_name,
                    "version": meta.tool_version,
                }]
            },
            "component": {
                "type": "platform",
                "bom-ref": "vm",
                "name": report.vm,
                "description": "a dormant virtual machine, read from its disk (and memory image) without running it",
                "properties": vm_props,
            },
            "properties": meta_props,
        },
        "components": components,
    });
    if !advisories.is_empty() {
        bom["vulnerabilities"] = advisories
            .into_iter()
            .map(|(id, affected)| {
                json!({
                    "bom-ref": format!("advisory:{id}"),
                    "id": id,
                    "source": { "name": affected[0].1.suites.join(",") },
                    "recommendation": affected
                        .iter()
                        .map(|(_, f)| format!("update {} to {}", f.name, f.candidate))
                        .collect::<Vec<_>>()
                        .join("; "),
                    "affects": affected.iter().map(|(r, _)| json!({ "ref": r })).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    bom
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Counts, ProcessHit};
    use emulator::disk::OsRelease;
    use packages::debversion::DebVersion;
    use packages::{dpkg, rpmdb};

    #[test]
    fn purls_follow_the_spec_examples() {
        // purl-spec's deb and rpm type examples.
        assert_eq!(
            purl(
                "deb",
                "debian",
                "curl",
                "7.50.3-1",
                &[("arch", "i386"), ("distro", "jessie")]
            ),
            "pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie"
        );
        assert_eq!(
            purl("deb", "debian", "attr", "1:2.4.47-2+b1", &[("arch", "amd64")]),
            "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64"
        );
        assert_eq!(
            purl(
                "rpm",
                "Fedora",
                "curl",
                "7.50.3-1.fc25",
                &[("epoch", ""), ("distro", "fedora-25"), ("arch", "i386")]
            ),
            "pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25"
        );
        assert_eq!(
            purl("rpm", "opensuse", "a b", "1-1", &[("epoch", "1"), ("arch", "noarch")]),
            "pkg:rpm/opensuse/a%20b@1-1?arch=noarch&epoch=1"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn deb(name: &str, version: &str, source: Option<&str>) -> dpkg::InstalledPackage {
        dpkg::InstalledPackage {
            name: name.into(),
            arch: "amd64".into(),
            version: DebVersion::parse(version).unwrap(),
            state: "installed".into(),
            want: "install".into(),
            source: source.map(Into::into),
        }
    }

    fn report(upgrades: Vec<Finding>, processes: Option<Vec<ProcessHit>>) -> Report {
        Report {
            vm: "web1".into(),
            disk: "/srv/web1.img".into(),
            checked_at: 1_700_000_000,
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            package_manager: "dpkg".into(),
            installed: 2,
            repositories: Vec::new(),
            counts: Counts::default(),
            upgrades,
            processes,
            warnings: vec!["a warning".into()],
        }
    }

    fn props<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_debian_vm() {
        let inv = Inventory {
            os: Some(OsRelease {
                id: Some("debian".into()),
                version_id: Some("12".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            }),
            debs: vec![
                deb("liblzma5", "5.4.1-1", Some("xz-utils")),
                deb("nginx", "1.22.1-9", None),
            ],
            rpms: Vec::new(),
            kernel: Some(RunningKernel {
                release: "6.1.0-1-amd64".into(),
                version: "#1 SMP".into(),
                banner: "Linux version 6.1.0-1-amd64 (x) #1 SMP\n".into(),
                hostname: "web1".into(),
                machine: "x86_64".into(),
                domain_name: None,
                domain_uuid: None,
            }),
        };
        let finding = |name: &str, installed: &str, priority| Finding {
            name: name.into(),
            arch: "amd64".into(),
            installed: installed.into(),
            candidate: "9".into(),
            suites: vec!["bookworm-security".into()],
            priority,
            advisories: Vec::new(),
        };
        let hit = ProcessHit {
            pid: 42,
            comm: "nginx".into(),
            exe: "/usr/sbin/nginx".into(),
            package: "nginx".into(),
            priority: Priority::Normal,
        };
        let serial = uuid::Uuid::nil();
        let meta = BomMeta {
            tool_name: "dormouse",
            tool_version: "0.1.0",
            serial,
        };
        let bom = cyclonedx(
            &report(
                vec![
                    finding("liblzma5", "5.4.1-1", Priority::Security),
                    finding("nginx", "1.22.1-9", Priority::Normal),
                ],
                Some(vec![hit]),
            ),
            &inv,
            &meta,
        );
        assert_eq!(bom["specVersion"], "1.5");
        assert_eq!(bom["serialNumber"], format!("urn:uuid:{serial}"));
        assert_eq!(bom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(bom["metadata"]["component"]["name"], "web1");
        assert_eq!(props(&bom["metadata"]["component"], "dormouse:vm:hostname"), ["web1"]);
        assert_eq!(props(&bom["metadata"], "dormouse:check:warning"), ["a warning"]);
        let comps = bom["components"].as_array().unwrap();
        assert_eq!(comps.len(), 4, "os, kernel, two packages");
        assert_eq!(
            (comps[0]["type"].as_str(), comps[0]["version"].as_str()),
            (Some("operating-system"), Some("12"))
        );
        assert_eq!(comps[1]["version"], "6.1.0-1-amd64");
        assert_eq!(props(&comps[1], "dormouse:kernel:package-installed"), ["false"]);
        let lzma = &comps[2];
        assert_eq!(
            lzma["purl"],
            "pkg:deb/debian/liblzma5@5.4.1-1?arch=amd64&distro=debian-12"
        );
        assert_eq!(lzma["bom-ref"], lzma["purl"]);
        assert_eq!(props(lzma, "dormouse:package:source"), ["xz-utils"]);
        assert_eq!(props(lzma, "dormouse:update:candidate"), ["9"]);
        assert_eq!(props(lzma, "dormouse:update:security"), ["true"]);
        assert!(props(lzma, "dormouse:used-by-process").is_empty());
        let nginx = &comps[3];
        assert_eq!(props(nginx, "dormouse:update:priority"), ["normal"]);
        assert_eq!(
            props(nginx, "dormouse:used-by-process"),
            ["pid=42 comm=nginx exe=/usr/sbin/nginx"]
        );
        assert!(bom.get("vulnerabilities").is_none(), "apt names no advisories");
    }

    #[test]
    fn an_rpm_vm_with_an_advisory() {
        let rpm = |name: &str, epoch, arch: &str| rpmdb::RpmPackage {
            name: name.into(),
            epoch,
            version: "1".into(),
            release: "1.fc40".into(),
            arch: arch.into(),
            files: Vec::new(),
            sourcerpm: Some(format!("{name}-1-1.fc40.src.rpm")),
            license: Some("MIT".into()),
        };
        let inv = Inventory {
            os: Some(OsRelease {
                id: Some("fedora".into()),
                version_id: Some("40".into()),
                pretty_name: None,
            }),
            debs: Vec::new(),
            rpms: vec![
                rpm("curl", Some(2), "x86_64"),
                rpm("doc", None, "noarch"),
                rpm("gpg-pubkey", None, ""),
            ],
            kernel: None,
        };
        let upgrades = vec![Finding {
            name: "curl".into(),
            arch: "x86_64".into(),
            installed: "2:1-1.fc40".into(),
            candidate: "2:2-1.fc40".into(),
            suites: vec!["updates".into()],
            priority: Priority::Security,
            advisories: vec!["FEDORA-2024-1".into()],
        }];
        let bom = cyclonedx(&report(upgrades, None), &inv, &BomMeta::new("dormouse", "0.1.0"));
        let comps = bom["components"].as_array().unwrap();
        assert_eq!(comps.len(), 4);
        assert_eq!(
            comps[1]["purl"],
            "pkg:rpm/fedora/curl@1-1.fc40?arch=x86_64&distro=fedora-40&epoch=2"
        );
        assert_eq!(comps[1]["version"], "2:1-1.fc40");
        assert_eq!(comps[1]["licenses"][0]["license"]["name"], "MIT");
        assert_eq!(props(&comps[1], "dormouse:update:advisory"), ["FEDORA-2024-1"]);
        assert_eq!(comps[3]["purl"], "pkg:rpm/fedora/gpg-pubkey@1-1.fc40?distro=fedora-40");
        let vulns = bom["vulnerabilities"].as_array().unwrap();
        assert_eq!(vulns.len(), 1);
        assert_eq!(vulns[0]["id"], "FEDORA-2024-1");
        assert_eq!(vulns[0]["affects"][0]["ref"], comps[1]["bom-ref"]);
        assert_eq!(
            props(&bom["metadata"], "dormouse:check:processes"),
            ["not checked (no memory image)"]
        );
    }
}
