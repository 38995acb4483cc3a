//! The x86-64 vCPU register layouts Xen hands out, shared by every Xen source: the 64-bit PV
//! `vcpu_guest_context` (save images, dump-cores, live domains) and the HVM `hvm_hw_cpu` save
//! record. Offsets are those of the Xen 4.17 public headers.

use crate::bytes::{le_u64, slice_at};
use crate::source::memory::{FRAME_MASK, PAGE_SHIFT, VcpuState};

/// Size of the 64-bit `vcpu_guest_context` (Xen 4.17 public headers).
pub(crate) const VCPU_CONTEXT_X64_LEN: u64 = 5168;

/// Decodes a 64-bit `vcpu_guest_context` at `ctx`; `to_pfn` maps the CR3 frame (pfn in a save
/// image, mfn in a dump-core) to a guest pfn.
pub(crate) fn pv64_vcpu(d: &[u8], ctx: u64, id: u32, to_pfn: impl Fn(u64) -> Option<u64>) -> Option<VcpuState> {
    slice_at(d, ctx, VCPU_CONTEXT_X64_LEN)?;
    let q = |o: u64| le_u64(d, ctx + o);
    let cr0 = q(4984)?;
    let cr1 = q(4992)?;
    let cr3 = q(5008)?;
    // 64-bit Xen packs CR3 as frame << 12 (`xen_pfn_to_cr3`); the save normalises the frame
    // to a pfn and marks a present user table as `1 | pfn << 12`.
    let user = (cr1 != 0).then_some((cr1 & !1) >> PAGE_SHIFT);
    Some(VcpuState {
        id,
        cr0: Some(cr0),
        cr2: q(5000),
        cr3: Some(cr3),
        cr4: q(5016),
        efer: None,
        rip: q(648),
        rsp: q(672),
        fs_base: q(5144),
        gs_base: q(5152),
        kernel_gs_base: q(5160),
        root_table_pfn: to_pfn(cr3 >> PAGE_SHIFT),
        user_root_table_pfn: user.and_then(&to_pfn),
    })
}

/// Decodes an `hvm_hw_cpu` payload at `cpu`.
pub(crate) fn hvm_vcpu(d: &[u8], cpu: u64, id: u32) -> Option<VcpuState> {
    let q = |o: u64| le_u64(d, cpu + o);
    let cr0 = q(656)?;
    let cr3 = q(672)?;
    Some(VcpuState {
        id,
        cr0: Some(cr0),
        cr2: q(664),
        cr3: Some(cr3),
        cr4: q(680),
        efer: q(992),
        rip: q(640),
        rsp: q(568),
        fs_base: q(832),
        gs_base: q(840),
        kernel_gs_base: q(944),
        // Without CR0.PG, CR3 names no page table.
        root_table_pfn: (cr0 & (1 << 31) != 0).then_some((cr3 & FRAME_MASK) >> PAGE_SHIFT),
        user_root_table_pfn: None,
    })
}
