//! Choosing the kernel's page-table root and paging mode from the saved vCPU state (KPTI,
//! LA57).

use super::{
    AddressSpace, CR4_LA57, EFER_LMA, ENTRIES, KernelRoot, ModeSource, NO_EXECUTE, PAGE_SIZE_BIT, PRESENT, PagingError,
    PagingMode, describe_vcpus, entry,
};
use crate::source::memory::{FRAME_MASK, FrameSpace, GuestKind, ImageFormat, PAGE_SHIFT, PhysMemory, VcpuState};

/// Chooses the vCPU, paging mode and kernel top-level table of `mem`.
///
/// The first vCPU with paging on and a recorded root is used (all vCPUs share the kernel
/// half). Mode, in order of trust: CR4.LA57; the Xen PV ABI (4-level only); VMCOREINFO's
/// `NUMBER(pgtable_l5_enabled)`; otherwise the mode under which [`AddressSpace::find_direct_map`]
/// verifies. A wrong mode would index the top table with the wrong address bits, so the
/// probe does not verify by accident: it needs 3/4 of sampled pages to map back to themselves.
///
/// KPTI: Linux with page-table isolation allocates each PGD as an 8 KiB pair, kernel PGD
/// first, user PGD (`PTI_USER_PGTABLE_BIT` = bit 12) second, and CR3 holds the user one while
/// user code runs. Its kernel half maps only the entry trampolines, so kernel addresses need
/// the kernel twin. The twin is taken only when the evidence is specific: the saved root is
/// odd, the page below it is present, both user halves are equal ignoring NX (PTI copies each
/// user entry into both, adding NX to the kernel copy), the user half is in use, and the
/// twin's kernel half has more present entries. Xen PV needs none of this: its vCPU context
/// names the kernel table (`ctrlreg[3]`) and the user table (`ctrlreg[1]`) separately, and
/// Linux disables PTI under Xen PV.
///
/// A raw image records no vCPU at all: the root is then found by [`scan_kernel_root`].
pub fn detect_kernel_root(mem: &dyn PhysMemory) -> Result<KernelRoot, PagingError> {
    let path = || mem.path().to_path_buf();
    if mem.vcpus().is_empty() && mem.format() == ImageFormat::Raw {
        return scan_kernel_root(mem);
    }
    let (vcpu, saved) = mem
        .vcpus()
        .iter()
        .filter(|v| v.paging_enabled() != Some(false))
        .find_map(|v| Some((v, v.root_table_pfn?)))
        .ok_or_else(|| PagingError::NoPagingVcpu {
            path: path(),
            recorded: describe_vcpus(mem.vcpus()),
        })?;
    if let Some(efer) = vcpu.efer
        && efer & EFER_LMA == 0
    {
        return Err(PagingError::NotLongMode {
            path: path(),
            vcpu: vcpu.id,
            efer,
        });
    }
    let twin = kpti_kernel_twin(mem, saved);
    let root_pfn = twin.unwrap_or(saved);
    if mem.page(root_pfn).is_none() {
        return Err(PagingError::RootNotPresent {
            path: path(),
            vcpu: vcpu.id,
            pfn: root_pfn,
        });
    }
    let (mode, mode_source) = detect_mode(mem, vcpu, root_pfn)?;
    Ok(KernelRoot {
        vcpu: vcpu.id,
        root_pfn,
        mode,
        mode_source,
        kpti_user_root: twin.is_some(),
        scanned: false,
    })
}

/// Candidate tables the scan verifies at most (each costs a direct-map probe).
const SCAN_MAX_VERIFIED: usize = 64;

/// Finds the kernel's top-level page table in an image that records no CR3.
///
/// Every x86-64 Linux top-level table (`init_top_pgt`/`swapper_pg_dir`, and every process's
/// PGD, which shares its kernel half) has entry 511 present (the kernel image and modules at
/// 0xffffffff80000000 in 4-level paging, 0xff80000000000000 and up in 5-level), several
/// present kernel-half entries (direct map, vmalloc, vmemmap, cpu_entry_area) pointing at
/// frames of the image, zero for every absent entry (`pgd_clear`), and no PS bit (reserved at
/// the top level). Pages passing that cheap filter are verified, those with an empty user
/// half first (the kernel's own table), by [`AddressSpace::find_direct_map`] under 4-level
/// then 5-level paging: the first that verifies is the root, and its mode is the one that
/// verified. A KPTI user PGD maps only the entry trampolines in its kernel half and fails
/// the probe, so it is never chosen.
fn scan_kernel_root(mem: &dyn PhysMemory) -> Result<KernelRoot, PagingError> {
    let in_image = |e: u64| mem.page((e & FRAME_MASK) >> PAGE_SHIFT).is_some();
    let plausible = |e: u64| e == 0 || (e & PRESENT != 0 && e & PAGE_SIZE_BIT == 0 && in_image(e));
    let half = ENTRIES / 2;
    let mut kernel_only = Vec::new();
    let mut with_user = Vec::new();
    for range in mem.present_ranges() {
        for pfn in range {
            let Some(table) = mem.page(pfn) else {
                continue;
            };
            let top = entry(table, ENTRIES - 1);
            if top & PRESENT == 0 || !plausible(top) {
                continue;
            }
            let kernel_present = (half..ENTRIES).filter(|&i| entry(table, i) & PRESENT != 0).count();
            if kernel_present < 3 || !(0..ENTRIES).all(|i| plausible(entry(table, i))) {
                continue;
            }
            if (0..half).all(|i| entry(table, i) == 0) {
                kernel_only.push(pfn);
            } else {
                with_user.push(pfn);
            }
        }
    }
    let candidates = kernel_only.len() + with_user.len();
    kernel_only
        .into_iter()
        .chain(with_user)
        .take(SCAN_MAX_VERIFIED)
        .find_map(|pfn| {
            [PagingMode::Level4, PagingMode::Level5]
                .into_iter()
                .find(|&m| AddressSpace::new(mem, pfn, m).find_direct_map().is_ok())
                .map(|mode| KernelRoot {
                    vcpu: 0,
                    root_pfn: pfn,
                    mode,
                    mode_source: ModeSource::DirectMapProbe,
                    kpti_user_root: false,
                    scanned: true,
                })
        })
        .ok_or_else(|| PagingError::NoKernelTable {
            path: mem.path().to_path_buf(),
            candidates,
        })
}

/// The kernel PGD of a KPTI pair whose user PGD is `pfn`; see [`detect_kernel_root`].
fn kpti_kernel_twin(mem: &dyn PhysMemory, pfn: u64) -> Option<u64> {
    if pfn & 1 == 0 || mem.frame_space() == FrameSpace::Machine || mem.guest_kind() == GuestKind::XenPv {
        return None;
    }
    let user = mem.page(pfn)?;
    let kernel = mem.page(pfn - 1)?;
    let half = ENTRIES / 2;
    let same_user_half = (0..half).all(|i| entry(user, i) & !NO_EXECUTE == entry(kernel, i) & !NO_EXECUTE);
    let user_half_used = (0..half).any(|i| entry(user, i) & PRESENT != 0);
    let kernel_entries = |t: &[u8]| (half..ENTRIES).filter(|&i| entry(t, i) & PRESENT != 0).count();
    (same_user_half && user_half_used && kernel_entries(kernel) > kernel_entries(user)).then_some(pfn - 1)
}

fn detect_mode(mem: &dyn PhysMemory, vcpu: &VcpuState, root_pfn: u64) -> Result<(PagingMode, ModeSource), PagingError> {
    let mode = |l5: bool| if l5 { PagingMode::Level5 } else { PagingMode::Level4 };
    if let Some(cr4) = vcpu.cr4 {
        return Ok((mode(cr4 & CR4_LA57 != 0), ModeSource::Cr4));
    }
    if mem.guest_kind() == GuestKind::XenPv {
        return Ok((PagingMode::Level4, ModeSource::XenPvAbi));
    }
    let l5 = mem.vmcoreinfo().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("NUMBER(pgtable_l5_enabled)="))
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    if let Some(l5) = l5 {
        return Ok((mode(l5 != 0), ModeSource::Vmcoreinfo));
    }
    [PagingMode::Level4, PagingMode::Level5]
        .into_iter()
        .find(|&m| AddressSpace::new(mem, root_pfn, m).find_direct_map().is_ok())
        .map(|m| (m, ModeSource::DirectMapProbe))
        .ok_or_else(|| PagingError::ModeUnknown {
            path: mem.path().to_path_buf(),
        })
}
