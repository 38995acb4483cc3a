//! The disk list of a domain's xl configuration (embedded in its save image), turned into
//! disks dormouse can open when they exist on this host.

use std::path::PathBuf;

use introspect::DomainConfig;
use serde::Serialize;

use super::format::ImageFormat;

/// A guest disk to open, as `--disk` or the xl config gives it: where, as what format
/// (`None`: probe), the name the guest knows it by, and (`--disk PATH:N`) which partition is
/// the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub format: Option<ImageFormat>,
    pub vdev: Option<String>,
    pub root_partition: Option<u32>,
}

impl DiskSpec {
    /// `PATH` or `PATH:N`, as [`super::disk_and_partition`] reads them.
    pub fn parse(text: &str) -> DiskSpec {
        let (path, root_partition) = super::disk_and_partition(text);
        DiskSpec {
            path,
            format: None,
            vdev: None,
            root_partition,
        }
    }
}

/// A configured disk that is not opened, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedDisk {
    pub vdev: Option<String>,
    pub path: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDisks {
    pub usable: Vec<DiskSpec>,
    pub skipped: Vec<SkippedDisk>,
}

#[derive(Debug, thiserror::Error)]
#[error("none of the disks in the domain's configuration can be opened here ({}); pass the guest's disks with --disk PATH", describe(.skipped))]
pub struct NoConfigDisk {
    pub skipped: Vec<SkippedDisk>,
}

fn describe(skipped: &[SkippedDisk]) -> String {
    if skipped.is_empty() {
        return "it lists no disks".into();
    }
    skipped
        .iter()
        .map(|s| {
            format!(
                "{}: {}{}",
                s.vdev.as_deref().unwrap_or("?"),
                s.path.as_deref().map(|p| format!("{p} ")).unwrap_or_default(),
                s.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Maps the configuration's disks to openable specs: cdroms, empty drives, unknown formats and
/// paths that do not exist on this host are skipped with a reason. xl itself never probes a
/// disk's format (its default is raw), so neither does this: `format` is always declared.
pub fn disks_from_config(config: &DomainConfig) -> Result<ConfigDisks, NoConfigDisk> {
    let raw_disks = config.raw.get("disks").and_then(|d| d.as_array());
    let mut out = ConfigDisks::default();
    for (index, disk) in config.disks.iter().enumerate() {
        let raw = raw_disks.and_then(|d| d.get(index));
        let is_cdrom = raw
            .and_then(|r| r.get("is_cdrom"))
            .is_some_and(|v| v.as_u64().is_some_and(|n| n != 0) || v.as_bool() == Some(true) || v == "True");
        let skip = |reason: String| SkippedDisk {
            vdev: disk.vdev.clone(),
            path: disk.pdev_path.clone(),
            reason,
        };
        let format_name = disk.format.as_deref().unwrap_or("raw");
        let path = disk.pdev_path.as_deref().filter(|p| !p.is_empty());
        let reason = if is_cdrom {
            Some("is a cdrom".to_owned())
        } else if format_name == "empty" {
            Some("is an empty drive".to_owned())
        } else if path.is_none() {
            Some("has no path".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            out.skipped.push(skip(reason));
            continue;
        }
        let path = PathBuf::from(path.unwrap_or_default());
        let Some(format) = ImageFormat::from_name(format_name) else {
            out.skipped
                .push(skip(format!("has format {format_name:?}, which dormouse cannot read")));
            continue;
        };
        if !path.exists() {
            out.skipped.push(skip("not found on this host".into()));
            continue;
        }
        out.usable.push(DiskSpec {
            path,
            format: Some(format),
            vdev: disk.vdev.clone(),
            root_partition: None,
        });
    }
    if out.usable.is_empty() {
        return Err(NoConfigDisk { skipped: out.skipped });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_config_maps_disks_and_skips_with_reasons() {
        let here = std::env::current_exe().unwrap();
        let config = DomainConfig::from_json(serde_json::json!({
            "disks": [
                {"pdev_path": here, "vdev": "xvda", "format": "qcow2", "readwrite": 1},
                {"pdev_path": "/nonexistent/disk.img", "vdev": "xvdb", "format": "raw"},
                {"pdev_path": "/srv/install.iso", "vdev": "hdc", "format": "raw", "is_cdrom": 1},
                {"vdev": "hdd", "format": "empty", "is_cdrom": 1},
                {"pdev_path": here, "vdev": "xvdc", "format": "nbd"},
                {"pdev_path": here, "vdev": "xvdd"}
            ]
        }));
        let disks = disks_from_config(&config).unwrap();
        assert_eq!(
            disks.usable,
            [
                DiskSpec {
                    path: here.clone(),
                    format: Some(ImageFormat::Qcow2),
                    vdev: Some("xvda".into()),
                    root_partition: None,
                },
                DiskSpec {
                    path: here.clone(),
                    format: Some(ImageFormat::Raw),
                    vdev: Some("xvdd".into()),
                    root_partition: None,
                }
            ]
        );
        let reasons: Vec<(&str, &str)> = disks
            .skipped
            .iter()
            .map(|s| (s.vdev.as_deref().unwrap(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("xvdb", "not found on this host"),
                ("hdc", "is a cdrom"),
                ("hdd", "is a cdrom"),
                ("xvdc", "has format \"nbd\", which dormouse cannot read"),
            ]
        );
        let none = DomainConfig::from_json(serde_json::json!({"disks": []}));
        assert!(
            disks_from_config(&none)
                .unwrap_err()
                .to_string()
                .contains("lists no disks")
        );
    }
}
