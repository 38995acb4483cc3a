//! vCPU state as the hypervisor reports it for a live domain.

use std::collections::HashMap;

use crate::source::memory::{FRAME_MASK, PAGE_SHIFT, VcpuState};
use crate::source::vcpu_context::pv64_vcpu;

/// vCPU state of a 64-bit PV guest from the bytes of its `vcpu_guest_context_x86_64`, as
/// `XEN_DOMCTL_getvcpucontext` returns it: `ctrlreg[3]` is `xen_pfn_to_cr3(mfn)` (`mfn << 12`
/// for 64-bit guests), `ctrlreg[1]` likewise for the user-mode table; both roots are
/// translated to pfns through `m2p`. `cr3` is kept as Xen reports it (a machine address).
pub(super) fn pv_vcpu_state(ctx: &[u8], id: u32, m2p: &HashMap<u64, u64>) -> Option<VcpuState> {
    // Same offsets as X86_PV_VCPU_BASIC records of a save image; only the frame space differs
    // (the saver normalises to pfns, Xen hands out mfns).
    pv64_vcpu(ctx, 0, id, |mfn| m2p.get(&mfn).copied())
}

/// Fields of `struct hvm_hw_cpu` (public/arch-x86/hvm/save.h) a vCPU state needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct HvmCpu {
    pub(super) cr0: u64,
    pub(super) cr2: u64,
    pub(super) cr3: u64,
    pub(super) cr4: u64,
    pub(super) efer: u64,
    pub(super) rip: u64,
    pub(super) rsp: u64,
    pub(super) fs_base: u64,
    pub(super) gs_base: u64,
    pub(super) shadow_gs: u64,
}

/// vCPU state of an HVM/PVH guest: CR3 is a guest-physical address.
pub(super) fn hvm_vcpu_state(cpu: &HvmCpu, id: u32) -> VcpuState {
    VcpuState {
        id,
        cr0: Some(cpu.cr0),
        cr2: Some(cpu.cr2),
        cr3: Some(cpu.cr3),
        cr4: Some(cpu.cr4),
        efer: Some(cpu.efer),
        rip: Some(cpu.rip),
        rsp: Some(cpu.rsp),
        fs_base: Some(cpu.fs_base),
        gs_base: Some(cpu.gs_base),
        kernel_gs_base: Some(cpu.shadow_gs),
        // Without CR0.PG, CR3 names no page table.
        root_table_pfn: (cpu.cr0 & (1 << 31) != 0).then_some((cpu.cr3 & FRAME_MASK) >> PAGE_SHIFT),
        user_root_table_pfn: None,
    }
}
