//! A live, **paused** Xen domain as a memory source (cargo feature `xen`): guest memory through
//! libxenforeignmemory, domain facts and vCPU state through libxenctrl. Runs in dom0 as root.
//!
//! The domain must stay paused (`xl pause`, or restored with `xl restore -p`) while it is read:
//! pages are served straight out of foreign mappings of the guest's frames, so a running guest
//! would change them under the reader and the kernel structures walked would not be consistent
//! with each other. [`XenDomain::attach`] refuses a domain that is not paused, but cannot stop
//! someone unpausing it later.
//!
//! - **HVM/PVH**: foreign maps take guest frame numbers, so pfn == gfn; the pfn space is
//!   `0..=xc_domain_maximum_gpfn`, and a gfn that does not map (hole, MMIO, paged out) is absent.
//!   vCPU state comes from the `CPU` record of the HVM context (`struct hvm_hw_cpu`).
//! - **PV (64-bit)**: foreign maps take *machine* frames and the guest's page tables and CR3 hold
//!   machine frames ([`FrameSpace::Machine`]). The pfn -> mfn table is the guest's own p2m,
//!   found through `shared_info.arch` the way libxc's saver does (`xg_sr_save_x86_pv.c`):
//!   the virtually mapped linear list (`p2m_cr3`/`p2m_vaddr`) when the guest publishes one,
//!   else (or if that walk fails) the 3-level `pfn_to_mfn_frame_list_list` tree. Its inverse
//!   serves [`PhysMemory::machine_to_phys`]. The p2m is guest-written data: every frame number
//!   in it is bounds-checked, and the foreign map itself only ever maps frames the domain owns.
//!
//! Pages are mapped lazily in chunks of [`CHUNK_FRAMES`] frames (one `xenforeignmemory_map`
//! call each), cached for the life of the [`XenDomain`] so that [`PhysMemory::page`] can hand
//! out `&[u8]` borrowed from `&self`, and unmapped on drop.
//!
//! Everything that does not need the hypervisor — the chunk cache, the p2m walks, shared-info
//! and vCPU decoding — is written against the small [`ForeignFrames`] trait and unit-tested
//! with synthetic machine memory; the FFI layer (`ffi`) is thin.

mod ffi;
mod frames;
mod p2m;
#[cfg(test)]
mod tests;
mod vcpu;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use xenctrl_sys as xc;

use crate::error::{Error, Result};
use crate::source::memory::{FrameSpace, GuestKind, ImageFormat, PhysMemory, VcpuState};
use crate::source::vcpu_context::VCPU_CONTEXT_X64_LEN;
use ffi::{FmemHandle, XcHandle, XenFrames};
pub use frames::CHUNK_FRAMES;
use frames::{LiveMemory, MAX_PFN_LIMIT, Translation};
pub use p2m::P2mSource;
use p2m::{P2mLimits, build_pv_p2m, invert_p2m, parse_arch_shared_info, pv_pfn_cap, read_frame};
use vcpu::{hvm_vcpu_state, pv_vcpu_state};

/// What [`XenDomain::attach`] learnt about the domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct XenLiveInfo {
    pub domid: u32,
    /// Domain handle (the UUID `xl list -v` shows).
    pub uuid: String,
    /// HVM or PVH (`XEN_DOMINF_hvm_guest`); otherwise PV.
    pub hvm: bool,
    /// PV only: guest word size in bytes (`xc_domain_get_guest_width`).
    pub guest_width: Option<u32>,
    /// Pages currently allocated to the domain.
    pub tot_pages: u64,
    /// The domain's page limit.
    pub max_pages: u64,
    pub max_vcpu_id: u32,
    /// One past the highest pfn served.
    pub pfn_limit: u64,
    /// PV only: where the guest's p2m was read from.
    pub p2m_source: Option<P2mSource>,
}

/// A live, **paused** Xen domain read through the hypervisor, from dom0 as root.
///
/// The domain must stay paused (`xl pause`, or `xl restore -p`) while it is read: pages are
/// borrowed straight from foreign mappings of the guest's frames, so a running guest would
/// change them under the reader. [`XenDomain::attach`] refuses a domain that is not paused.
///
/// - HVM/PVH: pfn == gfn over `0..=xc_domain_maximum_gpfn`; gfns that do not map are absent.
///   vCPU state comes from the HVM context's `CPU` records (CR3 guest-physical).
/// - 64-bit PV: pages are found through the guest's own p2m (linear list or frame-list tree,
///   see [`P2mSource`]); page tables and CR3 hold machine frames ([`FrameSpace::Machine`]),
///   translated by [`PhysMemory::machine_to_phys`]. 32-bit PV guests are refused.
///
/// Pages are mapped lazily, [`CHUNK_FRAMES`] at a time, and stay mapped until the value is
/// dropped; [`PhysMemory::present_ranges`] maps the whole guest to find out what is there.
pub struct XenDomain {
    info: XenLiveInfo,
    mem: LiveMemory<XenFrames>,
}

impl XenDomain {
    /// Attaches to domain `domid`, which must exist and be paused; reads its vCPU state and
    /// (PV) its p2m. Guest pages are mapped later, on first access.
    pub fn attach(domid: u32) -> Result<XenDomain> {
        let xc = XcHandle::open(domid)?;
        let dom = xc.dominfo()?;
        let not_usable = |problem: String, remedy: &'static str| Error::XenDomain { domid, problem, remedy };
        let flag = |f: u32| dom.flags & f != 0;
        if flag(xc::XEN_DOMINF_dying) {
            return Err(not_usable(
                "the domain is dying".into(),
                "wait for it to go away; there is nothing left to read",
            ));
        }
        if !flag(xc::XEN_DOMINF_paused) {
            return Err(not_usable(
                "the domain is running (not paused)".into(),
                "reading a running guest gives an inconsistent view of its memory: pause it with \
                 `xl pause <domain>` (and `xl unpause` afterwards), or restore it paused with \
                 `xl restore -p`",
            ));
        }
        // Set for HVM and PVH guests alike.
        let hvm = flag(xc::XEN_DOMINF_hvm_guest);
        let frames = XenFrames {
            fmem: Arc::new(FmemHandle::open(domid)?),
            domid,
        };
        let label = PathBuf::from(format!("xen-domain:{domid}"));
        let mut info = XenLiveInfo {
            domid,
            uuid: format_uuid(&dom.handle),
            hvm,
            guest_width: None,
            tot_pages: dom.tot_pages,
            max_pages: dom.max_pages,
            max_vcpu_id: dom.max_vcpu_id,
            pfn_limit: 0,
            p2m_source: None,
        };
        let mem = if hvm {
            let max_gpfn = xc.maximum_gpfn()?;
            let pfn_limit = max_gpfn.checked_add(1).filter(|&l| l <= MAX_PFN_LIMIT).ok_or_else(|| {
                not_usable(
                    format!("xc_domain_maximum_gpfn reports {max_gpfn:#x}, beyond 52-bit physical addresses"),
                    "this is not a sane x86 guest; report it",
                )
            })?;
            let mut mem = LiveMemory::new(label, GuestKind::XenHvm, frames, Translation::Identity, pfn_limit);
            for vcpu in xc.online_vcpus(dom.max_vcpu_id)? {
                let cpu = xc.hvm_cpu(vcpu)?;
                mem.vcpus.push(hvm_vcpu_state(&cpu, vcpu));
            }
            mem
        } else {
            let width = xc.guest_width()?;
            info.guest_width = Some(width);
            if width != 8 {
                return Err(not_usable(
                    format!("the domain is a {}-bit PV guest", width * 8),
                    "only 64-bit PV guests are supported; save it with `xl save` and read the image",
                ));
            }
            let limits = P2mLimits {
                max_mfn: xc.maximum_ram_page()?,
                max_pfns: pv_pfn_cap(dom.tot_pages),
            };
            let shinfo = read_frame(&frames, dom.shared_info_frame, "shared_info page")
                .map_err(|e| not_usable(e, "is the domain fully built? check `xl list`"))?;
            let arch = parse_arch_shared_info(&shinfo)
                .ok_or_else(|| not_usable("the shared_info page is short".into(), "this is a bug; report it"))?;
            let (p2m, source) = build_pv_p2m(&frames, &arch, limits).map_err(|e| {
                not_usable(
                    format!("cannot read the guest's p2m (pfn -> mfn table): {e}"),
                    "the guest kernel may not have finished booting, or its p2m is corrupt; \
                     save it with `xl save` and read the image instead",
                )
            })?;
            info.p2m_source = Some(source);
            let m2p = invert_p2m(&p2m);
            let mut vcpus = Vec::new();
            for vcpu in xc.online_vcpus(dom.max_vcpu_id)? {
                let ctx = xc.pv_context(vcpu)?;
                let state = pv_vcpu_state(&ctx, vcpu, &m2p).ok_or_else(|| {
                    not_usable(
                        format!("vCPU {vcpu} context is shorter than {VCPU_CONTEXT_X64_LEN} bytes"),
                        "this is a bug; report it",
                    )
                })?;
                vcpus.push(state);
            }
            let mut mem = LiveMemory::new(label, GuestKind::XenPv, frames, Translation::Pv { p2m, m2p }, 0);
            mem.vcpus = vcpus;
            mem
        };
        info.pfn_limit = mem.pfn_limit;
        Ok(XenDomain { info, mem })
    }

    /// Domain id.
    pub fn domid(&self) -> u32 {
        self.info.domid
    }

    /// What attaching learnt about the domain.
    pub fn info(&self) -> &XenLiveInfo {
        &self.info
    }

    /// The first chunk of pages whose mapping failed as a whole (its pages read as absent),
    /// if any: a hint when pages one expected are missing.
    pub fn map_error(&self) -> Option<&str> {
        self.mem.first_map_error.get().map(String::as_str)
    }
}

impl PhysMemory for XenDomain {
    fn path(&self) -> &Path {
        &self.mem.label
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::XenLive
    }
    fn guest_kind(&self) -> GuestKind {
        self.mem.kind
    }
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.mem.page(pfn)
    }
    /// Probes the whole pfn space, mapping every chunk (they stay mapped for later reads).
    fn present_ranges(&self) -> Box<dyn Iterator<Item = Range<u64>> + '_> {
        Box::new(self.mem.present_ranges())
    }
    fn vcpus(&self) -> &[VcpuState] {
        &self.mem.vcpus
    }
    fn frame_space(&self) -> FrameSpace {
        match self.mem.translation {
            Translation::Identity => FrameSpace::Physical,
            Translation::Pv { .. } => FrameSpace::Machine,
        }
    }
    fn machine_to_phys(&self, mfn: u64) -> Option<u64> {
        self.mem.machine_to_phys(mfn)
    }
}

/// Attaches to the paused domain `domid` as a [`PhysMemory`] (the live counterpart of
/// [`crate::open_memory`], which only opens files).
pub fn open_live_domain(domid: u32) -> Result<Box<dyn PhysMemory>> {
    Ok(Box::new(XenDomain::attach(domid)?))
}

fn format_uuid(h: &[u8; 16]) -> String {
    let hex = hex::encode(h);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
