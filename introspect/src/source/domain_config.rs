//! The libxl domain configuration (`libxl_domain_config` as JSON) that `xl save` embeds and
//! `xl list -l` prints: what a memory source can say about the domain beyond its memory.

use serde::Serialize;
use serde_json::Value;

/// A disk of the embedded domain configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskConfig {
    pub pdev_path: Option<String>,
    pub vdev: Option<String>,
    pub format: Option<String>,
    pub readwrite: Option<bool>,
}

/// A network interface (vif) of the embedded domain configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicConfig {
    pub devid: Option<u64>,
    pub mac: Option<String>,
    pub bridge: Option<String>,
    pub ip: Option<String>,
    pub script: Option<String>,
}

/// The libxl domain configuration `xl save` embeds (`libxl_domain_config` as JSON). Fields are
/// optional because libxl omits defaults; `raw` keeps everything else.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainConfig {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `c_info.type`: "pv", "hvm" or "pvh".
    pub domain_type: Option<String>,
    pub max_memkb: Option<u64>,
    pub target_memkb: Option<u64>,
    pub max_vcpus: Option<u64>,
    pub avail_vcpus: Vec<u64>,
    pub kernel: Option<String>,
    pub cmdline: Option<String>,
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    pub raw: Value,
}

impl DomainConfig {
    /// Extracts the known fields from libxl's JSON; unexpected shapes read as absent.
    pub fn from_json(raw: Value) -> DomainConfig {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        let c_info = raw.get("c_info").cloned().unwrap_or(Value::Null);
        let b_info = raw.get("b_info").cloned().unwrap_or(Value::Null);
        let list = |k: &str| raw.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let disks = list("disks")
            .iter()
            .map(|d| DiskConfig {
                pdev_path: s(d, "pdev_path"),
                vdev: s(d, "vdev"),
                format: s(d, "format"),
                readwrite: n(d, "readwrite").map(|rw| rw != 0),
            })
            .collect();
        let nics = list("nics")
            .iter()
            .map(|v| NicConfig {
                devid: n(v, "devid"),
                mac: s(v, "mac"),
                bridge: s(v, "bridge"),
                ip: s(v, "ip"),
                script: s(v, "script"),
            })
            .collect();
        DomainConfig {
            name: s(&c_info, "name"),
            uuid: s(&c_info, "uuid"),
            domain_type: s(&c_info, "type"),
            max_memkb: n(&b_info, "max_memkb"),
            target_memkb: n(&b_info, "target_memkb"),
            max_vcpus: n(&b_info, "max_vcpus"),
            avail_vcpus: b_info
                .get("avail_vcpus")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            kernel: s(&b_info, "kernel"),
            cmdline: s(&b_info, "cmdline"),
            disks,
            nics,
            raw,
        }
    }
}
