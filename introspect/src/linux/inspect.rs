//! From a memory image to a [`GuestSnapshot`]: find the kernel's page tables, its symbols and
//! its struct layouts — from the image alone by default — then walk its data structures.

use std::collections::BTreeMap;

use super::extract::{ExtractError, KernelView, SymbolLookup};
use super::layout::{TypeInfo, layout_differences};
use super::snapshot::{Domain, GuestSnapshot, KernelInfo, Profile, SNAPSHOT_SCHEMA, Source, Uts};
use crate::arch::paging::AddressSpace;
use crate::arch::virt::VirtualMemory;
use crate::profile::btf::{Btf, find_kernel_btf};
use crate::profile::isf::{Isf, isf_from_btf_and_symbols};
use crate::profile::kallsyms::{KallsymsOptions, Symbols, carve_kallsyms, compare_symbols, kallsyms_from_vmcoreinfo};
use crate::profile::kernel_map::{DEFAULT_KERNEL_IMAGE_SIZE, START_KERNEL_MAP};
use crate::profile::vmcoreinfo::{LocatedVmcoreinfo, load_vmcoreinfo, release_version};
use crate::source::memory::PhysMemory;

/// Where x86-64 kernels are linked to run when KASLR does not move them.
const DEFAULT_TEXT: u64 = 0xffff_ffff_8100_0000;
/// Where they are linked to load in physical memory (`CONFIG_PHYSICAL_START`).
const PHYSICAL_START: u64 = 0x100_0000;
/// Symbols compared when two symbol sources are available.
const CROSS_CHECK_SAMPLE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: no Linux kernel found: {reason}")]
    NoKernel { path: String, reason: String },
    #[error("{path}: no symbols for the kernel: {reason}")]
    NoSymbols { path: String, reason: String },
    #[error("{path}: no type information for the kernel: {reason}")]
    NoTypes { path: String, reason: String },
    #[error(
        "{path}: the {what} does not match the kernel in the image: {detail}. Give the files of the \
         kernel that was running ({release}), or none to use what the image itself holds"
    )]
    ProfileMismatch {
        path: String,
        what: &'static str,
        release: String,
        detail: String,
    },
    #[error("{path}: reading the kernel's {what}: {detail}")]
    Walk {
        path: String,
        what: &'static str,
        detail: String,
    },
}

/// Symbol and type sources the user gives instead of (or to cross-check) the image's own.
#[derive(Default)]
pub struct ProfileFiles {
    /// A System.map (link-time addresses; relocated here) and where it came from.
    pub system_map: Option<(String, Symbols)>,
    /// BTF from a kernel image file (`KernelImage::btf`) and where it came from.
    pub btf: Option<(String, Btf)>,
    /// A Volatility 3 ISF (`Isf::open`) and where it came from: types and symbols, where
    /// `btf` and `system_map` do not give them. Its banner must be the running kernel's.
    pub isf: Option<(String, Isf)>,
}

impl SymbolLookup for Symbols {
    fn address(&self, name: &str) -> Option<u64> {
        self.address_of(name)
    }

    fn name_at(&self, addr: u64) -> Option<String> {
        self.nearest(addr)
            .filter(|(_, offset)| *offset == 0)
            .map(|(s, _)| s.name.to_owned())
    }

    fn next_after(&self, addr: u64) -> Option<u64> {
        // Called once per sysctl table: a pass over the address-sorted table is cheap enough.
        self.iter().map(|s| s.address).find(|a| *a > addr)
    }
}

/// The guest's kernel release as the image states it (VMCOREINFO, else the banner in RAM),
/// for callers that must pick profile files (e.g. `/boot/System.map-<release>`) first.
pub fn kernel_release(mem: &dyn PhysMemory) -> Option<String> {
    if let Ok(v) = load_vmcoreinfo(mem) {
        return Some(v.info.osrelease);
    }
    banner_release(mem)
}

/// Scans RAM for the `linux_banner` text ("Linux version <release> (...").
fn banner_release(mem: &dyn PhysMemory) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    let finder = memchr::memmem::Finder::new(NEEDLE);
    for pfn in mem.present_pfns() {
        let page = mem.page(pfn)?;
        for at in finder.find_iter(page) {
            let rest = &page[at + NEEDLE.len()..];
            let end = rest.iter().position(|b| *b == b' ').filter(|n| (3..64).contains(n))?;
            let release = std::str::from_utf8(&rest[..end]).ok()?;
            // The banner continues "(builder@host) (compiler...)"; format strings do not.
            if release_version(release).is_some() && rest.get(end + 1) == Some(&b'(') {
                return Some(release.to_owned());
            }
        }
    }
    None
}

/// The kernel found in an image: its address space, VMCOREINFO when it has one, and the
/// release it names.
struct FoundKernel<'m> {
    path: String,
    kernel: AddressSpace<'m>,
    root_pfn: u64,
    vmcoreinfo: Option<LocatedVmcoreinfo>,
    release_hint: String,
}

fn find_kernel<'m>(mem: &'m dyn PhysMemory, warnings: &mut Vec<String>) -> Result<FoundKernel<'m>, InspectError> {
    let path = mem.path().display().to_string();
    let (kernel, root) = AddressSpace::kernel(mem).map_err(|e| InspectError::NoKernel {
        path: path.clone(),
        reason: e.to_string().trim_start_matches(&format!("{path}: ")).to_owned(),
    })?;
    let vmcoreinfo = match load_vmcoreinfo(mem) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("no VMCOREINFO: {e}"));
            None
        }
    };
    let release_hint = vmcoreinfo
        .as_ref()
        .map(|v| v.info.osrelease.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| banner_release(mem))
        .ok_or_else(|| InspectError::NoKernel {
            path: path.clone(),
            reason: format!(
                "paging is on (root table at pfn {:#x}) but neither VMCOREINFO nor a Linux banner is in memory",
                root.root_pfn
            ),
        })?;
    Ok(FoundKernel {
        path,
        kernel,
        root_pfn: root.root_pfn,
        vmcoreinfo,
        release_hint,
    })
}

/// A Volatility 3 symbol table of the kernel in an image, and where its parts came from.
pub struct VolatilityProfile {
    /// The ISF document (format 6.2.0), symbols at their link-time addresses.
    pub isf: serde_json::Value,
    pub release: String,
    pub banner: String,
    pub symbols_from: String,
    pub types_from: String,
    /// The KASLR shift taken off the symbols from RAM.
    pub kaslr_offset: u64,
    pub warnings: Vec<String>,
}

/// Builds a Volatility 3 ISF for the kernel in `mem` from what the image holds (kallsyms and
/// `.BTF` in RAM), or from `files` where given, checked against RAM as [`snapshot`] checks
/// them. Symbols are written at link-time addresses, as a System.map has them: Volatility
/// finds the KASLR shift itself.
pub fn volatility_profile(mem: &dyn PhysMemory, files: &ProfileFiles) -> Result<VolatilityProfile, InspectError> {
    if let Some((label, _)) = &files.isf {
        return Err(InspectError::NoTypes {
            path: mem.path().display().to_string(),
            reason: format!("{label} is already an ISF: a profile is built from BTF, not from another profile"),
        });
    }
    let mut warnings = Vec::new();
    let found = find_kernel(mem, &mut warnings)?;
    let FoundKernel {
        path,
        kernel,
        vmcoreinfo,
        release_hint,
        ..
    } = &found;
    let (symbols, symbols_from) = symbols(mem, kernel, vmcoreinfo.as_ref(), release_hint, files, &mut warnings)?;
    let in_ram;
    let (btf, types_from) = match &files.btf {
        Some((label, given)) => (given, label.clone()),
        None => {
            in_ram = btf_in_ram(mem, kernel, &symbols).map_err(|why| InspectError::NoTypes {
                path: path.clone(),
                reason: format!("{why}. Give --kernel with the guest's vmlinuz or vmlinux"),
            })?;
            (&in_ram.1, in_ram.0.clone())
        }
    };
    check_types_against_memory(kernel, &symbols, btf, &symbols_from, path, release_hint)?;
    let no_user_space = |_: u64| -> Option<Box<dyn VirtualMemory + '_>> { None };
    let view = KernelView {
        kernel,
        symbols: &symbols,
        types: btf,
        user_space: &no_user_space,
    };
    // Volatility identifies a kernel by it.
    let banner = view.banner().map_err(|e| InspectError::Walk {
        path: path.clone(),
        what: "banner",
        detail: e.to_string(),
    })?;
    let runtime_text = symbols.address_of("_text").ok_or_else(|| InspectError::NoSymbols {
        path: path.clone(),
        reason: "no _text among the symbols, so the KASLR shift is unknown".into(),
    })?;
    let kaslr_offset = vmcoreinfo
        .as_ref()
        .and_then(|v| v.info.kernel_offset)
        .unwrap_or_else(|| runtime_text.wrapping_sub(DEFAULT_TEXT));
    let link_time = symbols
        .relocated(runtime_text.wrapping_sub(kaslr_offset))
        .map_err(|e| InspectError::NoSymbols {
            path: path.clone(),
            reason: format!("moving the symbols back to link time by {kaslr_offset:#x}: {e}"),
        })?;
    Ok(VolatilityProfile {
        isf: isf_from_btf_and_symbols(btf, &link_time, Some(&banner)),
        release: release_hint.clone(),
        banner,
        symbols_from,
        types_from,
        kaslr_offset,
        warnings,
    })
}

/// Reads what the guest kernel knew. Symbols and types come from the image unless `files`
/// provides them; when both are available they must agree.
pub fn snapshot(mem: &dyn PhysMemory, files: &ProfileFiles) -> Result<GuestSnapshot, InspectError> {
    let mut warnings = Vec::new();
    let FoundKernel {
        path,
        kernel,
        root_pfn,
        vmcoreinfo,
        release_hint,
    } = find_kernel(mem, &mut warnings)?;

    let (symbols, symbols_from) = symbols(mem, &kernel, vmcoreinfo.as_ref(), &release_hint, files, &mut warnings)?;
    let (in_ram, btf_missing) = match btf_in_ram(mem, &kernel, &symbols) {
        Ok(found) => (Some(found), String::new()),
        Err(why) => (None, why),
    };
    let (types, types_from): (&dyn TypeInfo, String) = match (&files.btf, &files.isf, &in_ram) {
        (Some((label, given)), _, Some((where_, btf))) => {
            if given.bytes() != btf.bytes() {
                return Err(InspectError::ProfileMismatch {
                    path,
                    what: "kernel image's BTF",
                    release: release_hint,
                    detail: format!("{label} differs from the {where_}"),
                });
            }
            (given, format!("{label} (identical to the {where_})"))
        }
        (Some((label, given)), _, None) => (given, label.clone()),
        (None, Some((label, isf)), None) => (isf, format!("ISF {label}")),
        (None, Some((label, isf)), Some((where_, btf))) => {
            let differences = layout_differences(btf, isf);
            if !differences.is_empty() {
                return Err(InspectError::ProfileMismatch {
                    path,
                    what: "ISF",
                    release: release_hint,
                    detail: format!(
                        "{} of its layouts differ from the {where_}: {}",
                        differences.len(),
                        differences.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                    ),
                });
            }
            (isf, format!("ISF {label} (layouts agree with the {where_})"))
        }
        (None, None, Some((where_, btf))) => (btf, where_.clone()),
        (None, None, None) => {
            return Err(InspectError::NoTypes {
                path,
                reason: format!(
                    "{btf_missing}. A kernel built without CONFIG_DEBUG_INFO_BTF, or its BTF damaged: give --kernel \
                     with the guest's vmlinuz or vmlinux"
                ),
            });
        }
    };
    check_types_against_memory(&kernel, &symbols, types, &symbols_from, &path, &release_hint)?;

    let user_space = |pgd_phys: u64| -> Option<Box<dyn VirtualMemory + '_>> {
        let pfn = pgd_phys >> 12;
        mem.page(pfn)?;
        Some(Box::new(kernel.with_root(pfn)))
    };
    let view = KernelView {
        kernel: &kernel,
        symbols: &symbols,
        types,
        user_space: &user_space,
    };
    let walk_err = |what: &'static str| {
        let path = path.clone();
        move |e: ExtractError| InspectError::Walk {
            path,
            what,
            detail: e.to_string(),
        }
    };
    let uts = view.uts().map_err(walk_err("utsname"))?;
    if uts.release != release_hint {
        warnings.push(format!(
            "utsname says release {} but VMCOREINFO/banner say {release_hint}",
            uts.release
        ));
    }
    let banner = view.banner().unwrap_or_else(|e| {
        warnings.push(format!("banner: {e}"));
        String::new()
    });
    let cmdline = view
        .cmdline()
        .map_err(|e| warnings.push(format!("command line: {e}")))
        .ok();
    let boot_id = view.boot_id().unwrap_or_else(|e| {
        warnings.push(format!("boot_id: {e}"));
        None
    });
    if boot_id.is_none() {
        warnings.push("boot_id: the guest never generated one (nothing read it before the snapshot)".into());
    }
    let (tasks, task_warnings) = view.tasks(&uts.release).map_err(walk_err("task list"))?;
    warnings.extend(task_warnings);
    let filesystems = or_warn(&mut warnings, "filesystems", view.filesystems());
    let modules = or_warn(&mut warnings, "modules", view.modules());
    let (mounts, mount_warnings) = or_warn(&mut warnings, "mounts", view.mounts());
    warnings.extend(mount_warnings);
    let interfaces = or_warn(&mut warnings, "interfaces", view.interfaces());
    let tty = view
        .tty_drivers()
        .map_err(|e| warnings.push(format!("/proc/tty/drivers: {e}")))
        .ok();
    let (mut sysctl, sysctl_warnings) = or_warn(&mut warnings, "sysctls", view.sysctls());
    warnings.extend(sysctl_warnings);
    sysctl.extend(uts_sysctls(&uts, boot_id.as_deref()));
    let system = view.system(&mut warnings);

    let kaslr_offset = vmcoreinfo
        .as_ref()
        .and_then(|v| v.info.kernel_offset)
        .or_else(|| symbols.address_of("_text").map(|t| t.wrapping_sub(DEFAULT_TEXT)))
        .unwrap_or(0);
    tracing::info!(
        "{path}: Linux {} ({} tasks); symbols: {symbols_from}; types: {types_from}; KASLR shift {kaslr_offset:#x}",
        uts.release,
        tasks.len()
    );
    let page_offset_base = kernel.find_direct_map().map(|d| d.base).ok();

    Ok(GuestSnapshot {
        schema: SNAPSHOT_SCHEMA.to_owned(),
        source: Source {
            path: path.clone(),
            format: serde_plain(&mem.format()),
            guest_kind: serde_plain(&mem.guest_kind()),
            pages: mem.page_count(),
        },
        domain: mem.domain_config().map(|c| Domain {
            name: c.name.clone(),
            uuid: c.uuid.clone(),
            domain_type: c.domain_type.clone(),
            memory_kib: c.max_memkb,
            vcpus: c.max_vcpus,
        }),
        kernel: KernelInfo {
            release: uts.release.clone(),
            version: uts.version.clone(),
            banner,
            cmdline,
            kaslr_offset,
            kaslr_phys_offset: symbols
                .address_of("_text")
                .and_then(|text| kernel.translate(text).ok())
                .map(|phys| phys.wrapping_sub(PHYSICAL_START) as i64),
            page_table_root: root_pfn << 12,
            page_offset_base,
            profile: Profile {
                symbols: symbols_from,
                types: types_from,
            },
        },
        uts,
        boot_id,
        tasks,
        filesystems,
        sysctl,
        modules,
        mounts,
        interfaces,
        tty,
        system,
        warnings,
    })
}

/// A part of the snapshot that failed is empty, with the reason among the warnings.
fn or_warn<T: Default>(warnings: &mut Vec<String>, what: &str, r: Result<T, ExtractError>) -> T {
    r.unwrap_or_else(|e| {
        warnings.push(format!("{what}: {e}"));
        T::default()
    })
}

/// The `kernel.*` sysctls that are the utsname and boot id.
fn uts_sysctls(uts: &Uts, boot_id: Option<&str>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("kernel.ostype", &uts.sysname),
        ("kernel.hostname", &uts.nodename),
        ("kernel.osrelease", &uts.release),
        ("kernel.version", &uts.version),
        ("kernel.domainname", &uts.domainname),
    ] {
        m.insert(k.to_owned(), v.clone());
    }
    if let Some(id) = boot_id {
        m.insert("kernel.random.boot_id".to_owned(), id.to_owned());
    }
    m
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Symbols from the image's kallsyms (located by VMCOREINFO, or carved), and/or a given
/// System.map relocated to the running kernel; when both exist they must agree.
fn symbols(
    mem: &dyn PhysMemory,
    kernel: &AddressSpace,
    vmcoreinfo: Option<&LocatedVmcoreinfo>,
    release: &str,
    files: &ProfileFiles,
    warnings: &mut Vec<String>,
) -> Result<(Symbols, String), InspectError> {
    let path = mem.path().display().to_string();
    let opts = match vmcoreinfo {
        Some(v) => KallsymsOptions::from_vmcoreinfo(&v.info),
        None => KallsymsOptions {
            big_symbols: release_version(release).is_some_and(|v| v >= (6, 1)),
            stext: None,
        },
    };
    let from_vmcoreinfo = vmcoreinfo.map(|v| kallsyms_from_vmcoreinfo(kernel, &v.info));
    let decoded = match from_vmcoreinfo {
        Some(Ok(k)) => Ok((
            k.symbols,
            format!(
                "kallsyms in RAM, located by VMCOREINFO (kallsyms_names at {:#x})",
                k.location.names
            ),
        )),
        other => {
            if let Some(Err(e)) = other {
                warnings.push(format!("kallsyms via VMCOREINFO: {e}; carving instead"));
            }
            let start = vmcoreinfo
                .and_then(|v| v.info.symbol("_stext"))
                .unwrap_or(START_KERNEL_MAP);
            carve_kallsyms(
                kernel,
                start..START_KERNEL_MAP.saturating_add(DEFAULT_KERNEL_IMAGE_SIZE),
                &opts,
            )
            .map(|k| {
                let names = k.location.names;
                (
                    k.symbols,
                    format!("kallsyms in RAM, carved by signature (kallsyms_names at {names:#x})"),
                )
            })
        }
    };
    let given = match (&files.system_map, &files.isf) {
        (Some((label, map)), _) => Some((label.clone(), map, "System.map")),
        (None, Some((label, isf))) => Some((format!("ISF {label}"), isf.symbols(), "ISF")),
        (None, None) => None,
    };
    let Some((label, map, what)) = given else {
        return decoded.map_err(|e| InspectError::NoSymbols {
            path,
            reason: format!("{e}; give --system-map with the kernel's real System.map"),
        });
    };
    // Link-time addresses move by the KASLR shift of _text.
    let runtime_text = match (&decoded, vmcoreinfo.and_then(|v| v.info.kernel_offset)) {
        (Ok((s, _)), _) if s.address_of("_text").is_some() => s.address_of("_text"),
        (_, Some(offset)) => map.address_of("_text").map(|t| t.wrapping_add(offset)),
        _ => None,
    };
    let Some(runtime_text) = runtime_text else {
        return Err(InspectError::NoSymbols {
            path,
            reason: format!(
                "{label} cannot be relocated: the KASLR shift is unknown (no VMCOREINFO KERNELOFFSET, no kallsyms)"
            ),
        });
    };
    let relocated = map.relocated(runtime_text).map_err(|e| InspectError::ProfileMismatch {
        path: path.clone(),
        what,
        release: release.to_owned(),
        detail: e.to_string(),
    })?;
    if let Some((_, isf)) = &files.isf {
        let decoded = decoded.as_ref().ok().map(|(s, _)| s);
        check_isf_banner(kernel, isf, decoded, &relocated, &path, release)?;
    }
    if let Ok((decoded, _)) = &decoded {
        let sample = decoded.sample_names(CROSS_CHECK_SAMPLE);
        if let Err(mismatches) = compare_symbols(decoded, &relocated, &sample) {
            let first: Vec<String> = mismatches.iter().take(3).map(|m| m.to_string()).collect();
            return Err(InspectError::ProfileMismatch {
                path,
                what,
                release: release.to_owned(),
                detail: format!(
                    "{} of {} sampled symbols differ from the kernel's own kallsyms (e.g. {})",
                    mismatches.len(),
                    sample.len(),
                    first.join("; ")
                ),
            });
        }
    }
    Ok((
        relocated,
        format!("{label} (relocated by {:#x})", runtime_text.wrapping_sub(DEFAULT_TEXT)),
    ))
}

/// An ISF names the kernel it was made for by its banner (Volatility picks ISFs that way):
/// it must be the banner in memory, found through the kernel's own kallsyms when decoded,
/// else at the ISF's own (relocated) `linux_banner`.
fn check_isf_banner(
    kernel: &AddressSpace,
    isf: &Isf,
    decoded: Option<&Symbols>,
    relocated: &Symbols,
    path: &str,
    release: &str,
) -> Result<(), InspectError> {
    let Some(expected) = isf.banner() else {
        return Ok(());
    };
    let mismatch = |detail: String| InspectError::ProfileMismatch {
        path: path.to_owned(),
        what: "ISF",
        release: release.to_owned(),
        detail,
    };
    let at = decoded
        .and_then(|d| d.address_of("linux_banner"))
        .or_else(|| relocated.address_of("linux_banner"))
        .ok_or_else(|| {
            mismatch(format!(
                "it was made for {expected:?}, but no symbols locate linux_banner"
            ))
        })?;
    let found = super::reader::KernelReader::new(kernel)
        .c_string(at, 1024, "linux_banner")
        .map_err(|e| {
            mismatch(format!(
                "it was made for {expected:?}, but the banner in memory is unreadable: {e}"
            ))
        })?;
    let found = found.trim_end_matches('\n');
    if found != expected {
        return Err(mismatch(format!(
            "it was made for {expected:?}, but the banner in memory is {found:?}"
        )));
    }
    Ok(())
}

/// The kernel's own `.BTF`: read between the `__start_BTF`/`__stop_BTF` symbols when the
/// symbols have them (cost independent of guest RAM), else carved by scanning all pages.
/// Without one, says what was looked at and why it did not do, for the error.
fn btf_in_ram(mem: &dyn PhysMemory, kernel: &AddressSpace, symbols: &Symbols) -> Result<(String, Btf), String> {
    const MAX_BTF: u64 = 128 << 20;
    let mut rejected = None;
    if let (Some(start), Some(stop)) = (symbols.address_of("__start_BTF"), symbols.address_of("__stop_BTF")) {
        let label = format!(".BTF in RAM at __start_BTF ({start:#x})");
        let why = match stop.checked_sub(start).filter(|l| (1..=MAX_BTF).contains(l)) {
            None => format!("__stop_BTF ({stop:#x}) is not 1 byte to {} MiB after it", MAX_BTF >> 20),
            Some(len) => {
                let mut bytes = vec![0u8; len as usize];
                match kernel.read_virt(start, &mut bytes) {
                    Err(e) => format!("unreadable: {e}"),
                    Ok(()) => match Btf::parse(label.clone(), bytes) {
                        Ok(btf) => return Ok((label, btf)),
                        Err(e) => e.to_string(),
                    },
                }
            }
        };
        rejected = Some(format!("the {label}: {why}"));
    }
    if let Some(c) = find_kernel_btf(mem) {
        return Ok((format!(".BTF carved from RAM at physical {:#x}", c.paddr), c.btf));
    }
    let searched = format!(
        "no BTF header with a task_struct found in the image's {} MiB of guest-physical memory",
        mem.present_ranges().map(|r| r.end - r.start).sum::<u64>() >> 8
    );
    Err(match rejected {
        Some(rejected) => format!("{rejected}; {searched}"),
        None => searched,
    })
}

/// Reads `init_task` with the chosen layouts: the idle task has pid 0 and is named
/// "swapper...". A layout from another kernel fails this.
fn check_types_against_memory(
    kernel: &AddressSpace,
    symbols: &Symbols,
    types: &dyn TypeInfo,
    symbols_from: &str,
    path: &str,
    release: &str,
) -> Result<(), InspectError> {
    let mismatch = |detail: String| InspectError::ProfileMismatch {
        path: path.to_owned(),
        what: "type information",
        release: release.to_owned(),
        detail,
    };
    let init_task = symbols
        .address_of("init_task")
        .ok_or_else(|| mismatch(format!("the symbols ({symbols_from}) have no init_task")))?;
    let (Some(pid), Some(comm)) = (
        types.member_offset("task_struct", "pid"),
        types.member_offset("task_struct", "comm"),
    ) else {
        return Err(mismatch("task_struct lacks pid or comm".into()));
    };
    let reader = super::reader::KernelReader::new(kernel);
    let pid = reader
        .i32(init_task + pid, "init_task.pid")
        .map_err(|e| mismatch(e.to_string()))?;
    let comm = reader
        .inline_string(init_task + comm, 16, "init_task.comm")
        .map_err(|e| mismatch(e.to_string()))?;
    if pid != 0 || !comm.starts_with("swapper") {
        return Err(mismatch(format!(
            "init_task read with these layouts has pid {pid} and comm {comm:?}, not 0 and \"swapper...\""
        )));
    }
    Ok(())
}
