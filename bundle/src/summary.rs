//! `dormouse bundle show`: one bundle's figures, from its manifest.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::manifest::{BaseType, EntryType, GuestIdentity, Manifest, Phase, ScriptType};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub count: u64,
    /// Bytes of regular files (new sizes for added and changed, the guest's for removed).
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptCount {
    pub phase: Phase,
    /// `preinst`, `postinst`, `prerm`, `postrm`, `triggered` (a `postinst triggered`), `other`.
    #[serde(rename = "type")]
    pub script_type: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub bundle_id: String,
    pub created_unix: u64,
    pub guest: GuestIdentity,
    pub command: Vec<String>,
    /// Paths the guest does not have yet, by entry type.
    pub added: BTreeMap<EntryType, Count>,
    /// Paths the guest has that the bundle replaces, by the new entry's type.
    pub changed: BTreeMap<EntryType, Count>,
    /// Removals (a directory counts once, with no bytes: its contents are not listed).
    pub removed: Count,
    pub opaque_dirs: u64,
    pub scripts: Vec<ScriptCount>,
    pub packages_installed: Vec<String>,
    pub packages_removed: Vec<String>,
    /// `name old → new`.
    pub packages_changed: Vec<String>,
    pub excluded: Count,
}

pub fn summarize(manifest: &Manifest) -> Summary {
    let base: HashMap<&str, (BaseType, u64)> = manifest
        .base
        .iter()
        .map(|b| (b.path.as_str(), (b.base_type, b.size)))
        .collect();
    let (mut added, mut changed) = (BTreeMap::new(), BTreeMap::new());
    for entry in &manifest.files {
        let side = if base.contains_key(entry.path.as_str()) {
            &mut changed
        } else {
            &mut added
        };
        side.entry(entry.entry_type)
            .or_insert_with(Count::default)
            .add(entry.size);
    }
    let mut removed = Count::default();
    for path in &manifest.removals {
        let bytes = match base.get(path.as_str()) {
            Some((BaseType::File, size)) => *size,
            _ => 0,
        };
        removed.add(bytes);
    }
    let mut scripts: BTreeMap<(Phase, &str), u64> = BTreeMap::new();
    for script in &manifest.scripts {
        let name = match script.script_type {
            ScriptType::Postinst if script.triggered => "triggered",
            other => other.name(),
        };
        *scripts.entry((script.phase, name)).or_default() += 1;
    }
    let mut summary = Summary {
        bundle_id: manifest.bundle_id.clone(),
        created_unix: manifest.created_unix,
        guest: manifest.guest.clone(),
        command: manifest.command.clone(),
        added,
        changed,
        removed,
        opaque_dirs: manifest.opaque_dirs.len() as u64,
        scripts: scripts
            .into_iter()
            .map(|((phase, name), count)| ScriptCount {
                phase,
                script_type: name.to_owned(),
                count,
            })
            .collect(),
        packages_installed: Vec::new(),
        packages_removed: Vec::new(),
        packages_changed: Vec::new(),
        excluded: Count::default(),
    };
    for p in &manifest.packages {
        match (&p.old_version, &p.new_version) {
            (None, Some(new)) => summary.packages_installed.push(format!("{} {new}", p.name)),
            (Some(old), None) => summary.packages_removed.push(format!("{} {old}", p.name)),
            (Some(old), Some(new)) => summary.packages_changed.push(format!("{} {old} → {new}", p.name)),
            (None, None) => {}
        }
    }
    for e in &manifest.excluded {
        summary.excluded.count += e.entries;
        summary.excluded.bytes += e.bytes;
    }
    summary
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let guest = &self.guest;
        writeln!(f, "bundle {}", self.bundle_id)?;
        writeln!(
            f,
            "guest: {} (uuid {}), kernel {}, boot id {}",
            guest.domain_name.as_deref().unwrap_or(&guest.hostname),
            guest.domain_uuid.as_deref().unwrap_or("unknown"),
            guest.kernel_release,
            guest.boot_id.as_deref().unwrap_or("unknown")
        )?;
        writeln!(f, "command: {}", self.command.join(" "))?;
        for (label, side) in [("added", &self.added), ("changed", &self.changed)] {
            let total = side.values().fold(Count::default(), |mut t, c| {
                t.count += c.count;
                t.bytes += c.bytes;
                t
            });
            let parts: Vec<String> = side.iter().map(|(t, c)| format!("{} {t:?}", c.count)).collect();
            writeln!(
                f,
                "{label}: {} entries, {} bytes ({})",
                total.count,
                total.bytes,
                parts.join(", ")
            )?;
        }
        writeln!(
            f,
            "removed: {} paths, {} bytes; opaque directories: {}",
            self.removed.count, self.removed.bytes, self.opaque_dirs
        )?;
        let scripts: Vec<String> = self
            .scripts
            .iter()
            .map(|s| format!("{:?}/{} {}", s.phase, s.script_type, s.count).to_lowercase())
            .collect();
        writeln!(
            f,
            "scripts: {}",
            if scripts.is_empty() {
                "none".into()
            } else {
                scripts.join(", ")
            }
        )?;
        for (label, list) in [
            ("installed", &self.packages_installed),
            ("removed", &self.packages_removed),
            ("changed", &self.packages_changed),
        ] {
            writeln!(f, "packages {label}: {}", list.len())?;
            for p in list {
                writeln!(f, "  {p}")?;
            }
        }
        write!(
            f,
            "excluded: {} entries, {} bytes",
            self.excluded.count, self.excluded.bytes
        )
    }
}
