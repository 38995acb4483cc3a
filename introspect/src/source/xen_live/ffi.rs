//! The thin FFI layer: libxenctrl for domain facts and vCPU state, libxenforeignmemory for
//! the guest's frames.

use std::ffi::{c_int, c_void};
use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use xenctrl_sys as xc;
use xenforeignmemory_sys as xfm;

use super::frames::{ForeignFrames, FrameMapping};
use super::vcpu::HvmCpu;
use crate::error::{Error, Result};
use crate::source::memory::PAGE_SIZE;

/// `HVM_SAVE_CODE(CPU)` (public/arch-x86/hvm/save.h).
const HVM_SAVE_CODE_CPU: u16 = 2;
/// Linux `PROT_READ`.
const PROT_READ: c_int = 1;

pub(super) const REMEDY_PRIVCMD: &str = "run as root in dom0 of a Xen host; is xenfs mounted on /proc/xen, or \
                              /dev/xen/privcmd present (modprobe xen-privcmd)?";
const REMEDY_DOMAIN: &str = "check the domain id with `xl list`; run as root in dom0";

/// The error of a failed call, from `errno` as the Xen libraries leave it.
fn call_error(domid: u32, call: &'static str, remedy: &'static str) -> Error {
    Error::XenCall {
        domid,
        call,
        source: io::Error::last_os_error(),
        remedy,
    }
}

/// A libxenctrl handle, used only while attaching (from one thread) and closed on drop.
pub(super) struct XcHandle {
    raw: NonNull<xc::xc_interface>,
    domid: u32,
}

impl XcHandle {
    pub(super) fn open(domid: u32) -> Result<XcHandle> {
        // SAFETY: null loggers select libxenctrl's default (stderr) loggers; flags 0 is the
        // documented default. The returned handle is owned by the XcHandle and closed once.
        let raw = unsafe { xc::xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let raw = NonNull::new(raw).ok_or_else(|| call_error(domid, "xc_interface_open", REMEDY_PRIVCMD))?;
        Ok(XcHandle { raw, domid })
    }

    fn fail(&self, call: &'static str, remedy: &'static str) -> Error {
        call_error(self.domid, call, remedy)
    }

    /// `XEN_DOMCTL_getdomaininfo` through `xc_domain_getinfolist`, which (unlike
    /// `xc_domain_getinfo`, removed in Xen 4.18) exists in every libxenctrl since 4.x.
    pub(super) fn dominfo(&self) -> Result<xc::xc_domaininfo_t> {
        // SAFETY: xc_domaininfo_t is plain C data for which all-zero bytes are valid.
        let mut info: xc::xc_domaininfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is open; `info` is a valid, writable array of one entry, matching
        // max_domains = 1.
        let rc = unsafe { xc::xc_domain_getinfolist(self.raw.as_ptr(), self.domid, 1, &mut info) };
        if rc < 0 {
            return Err(self.fail("xc_domain_getinfolist", REMEDY_DOMAIN));
        }
        // The call returns the first domain at or after `domid`.
        if rc == 0 || u32::from(info.domain) != self.domid {
            return Err(Error::XenDomain {
                domid: self.domid,
                problem: "no such domain".into(),
                remedy: "check the domain id with `xl list` (or `xl domid <name>`)",
            });
        }
        Ok(info)
    }

    pub(super) fn guest_width(&self) -> Result<u32> {
        let mut width: std::ffi::c_uint = 0;
        // SAFETY: the handle is open; `width` is a valid out-pointer.
        let rc = unsafe { xc::xc_domain_get_guest_width(self.raw.as_ptr(), self.domid, &mut width) };
        if rc != 0 {
            return Err(self.fail("xc_domain_get_guest_width", REMEDY_DOMAIN));
        }
        Ok(width)
    }

    pub(super) fn maximum_gpfn(&self) -> Result<u64> {
        let mut gpfn: xc::xen_pfn_t = 0;
        // SAFETY: the handle is open; `gpfn` is a valid out-pointer.
        let rc = unsafe { xc::xc_domain_maximum_gpfn(self.raw.as_ptr(), self.domid, &mut gpfn) };
        if rc != 0 {
            return Err(self.fail("xc_domain_maximum_gpfn", REMEDY_DOMAIN));
        }
        Ok(gpfn)
    }

    pub(super) fn maximum_ram_page(&self) -> Result<u64> {
        let mut max_mfn: std::ffi::c_ulong = 0;
        // SAFETY: the handle is open; `max_mfn` is a valid out-pointer.
        let rc = unsafe { xc::xc_maximum_ram_page(self.raw.as_ptr(), &mut max_mfn) };
        if rc != 0 {
            return Err(self.fail("xc_maximum_ram_page", REMEDY_PRIVCMD));
        }
        Ok(max_mfn)
    }

    /// Ids of the online vCPUs (offline ones have no state worth reading, as for the saver).
    pub(super) fn online_vcpus(&self, max_vcpu_id: u32) -> Result<Vec<u32>> {
        let mut online = Vec::new();
        for vcpu in 0..=max_vcpu_id {
            // SAFETY: plain C data for which all-zero bytes are valid.
            let mut info: xc::xc_vcpuinfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the handle is open; `info` is a valid out-pointer.
            let rc = unsafe { xc::xc_vcpu_getinfo(self.raw.as_ptr(), self.domid, vcpu, &mut info) };
            if rc != 0 {
                return Err(self.fail("xc_vcpu_getinfo", REMEDY_DOMAIN));
            }
            if info.online != 0 {
                online.push(vcpu);
            }
        }
        Ok(online)
    }

    /// The raw bytes of a PV vCPU's `vcpu_guest_context` (64-bit form for 64-bit guests).
    pub(super) fn pv_context(&self, vcpu: u32) -> Result<Vec<u8>> {
        let words = std::mem::size_of::<xc::vcpu_guest_context_any_t>().div_ceil(8);
        // A zeroed, 8-byte aligned buffer at least as large as the union the call fills.
        let mut buf = vec![0u64; words];
        // SAFETY: the handle is open; `buf` is writable, 8-byte aligned (the union's
        // alignment) and at least size_of::<vcpu_guest_context_any_t>() bytes long, and lives
        // across the call.
        let rc = unsafe {
            xc::xc_vcpu_getcontext(
                self.raw.as_ptr(),
                self.domid,
                vcpu,
                buf.as_mut_ptr().cast::<xc::vcpu_guest_context_any_t>(),
            )
        };
        if rc != 0 {
            return Err(self.fail("xc_vcpu_getcontext", REMEDY_DOMAIN));
        }
        Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).collect())
    }

    /// The `CPU` record of an HVM/PVH vCPU.
    pub(super) fn hvm_cpu(&self, vcpu: u32) -> Result<HvmCpu> {
        let instance = u16::try_from(vcpu).map_err(|_| Error::XenDomain {
            domid: self.domid,
            problem: format!("vCPU id {vcpu} does not fit an HVM save instance number"),
            remedy: "this is not a sane domain; report it",
        })?;
        // SAFETY: hvm_hw_cpu is plain C data for which all-zero bytes are valid.
        let mut cpu: xc::hvm_hw_cpu = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<xc::hvm_hw_cpu>() as u32;
        // SAFETY: the handle is open; `cpu` is a writable hvm_hw_cpu and `size` is its size,
        // which bounds what Xen copies into it.
        let rc = unsafe {
            xc::xc_domain_hvm_getcontext_partial(
                self.raw.as_ptr(),
                self.domid,
                HVM_SAVE_CODE_CPU,
                instance,
                (&mut cpu as *mut xc::hvm_hw_cpu).cast::<c_void>(),
                size,
            )
        };
        if rc != 0 {
            return Err(self.fail("xc_domain_hvm_getcontext_partial(CPU)", REMEDY_DOMAIN));
        }
        Ok(HvmCpu {
            cr0: cpu.cr0,
            cr2: cpu.cr2,
            cr3: cpu.cr3,
            cr4: cpu.cr4,
            efer: cpu.msr_efer,
            rip: cpu.rip,
            rsp: cpu.rsp,
            fs_base: cpu.fs_base,
            gs_base: cpu.gs_base,
            shadow_gs: cpu.shadow_gs,
        })
    }
}

impl Drop for XcHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from xc_interface_open and is closed exactly once, here.
        unsafe {
            xc::xc_interface_close(self.raw.as_ptr());
        }
    }
}

/// A libxenforeignmemory handle. Calls through it are serialised by `lock`.
pub(super) struct FmemHandle {
    raw: NonNull<xfm::xenforeignmemory_handle>,
    lock: Mutex<()>,
}

// SAFETY: the handle is an open privcmd file descriptor plus immutable configuration; it is not
// tied to the thread that opened it, and every use (map, unmap) holds `lock`, so it is never
// used from two threads at once.
unsafe impl Send for FmemHandle {}
// SAFETY: as for Send: shared access only ever calls the library under `lock`.
unsafe impl Sync for FmemHandle {}

impl FmemHandle {
    pub(super) fn open(domid: u32) -> Result<FmemHandle> {
        // SAFETY: a null logger selects the default one; flags 0 is the documented default.
        let raw = unsafe { xfm::xenforeignmemory_open(std::ptr::null_mut(), 0) };
        let raw = NonNull::new(raw).ok_or_else(|| call_error(domid, "xenforeignmemory_open", REMEDY_PRIVCMD))?;
        Ok(FmemHandle {
            raw,
            lock: Mutex::new(()),
        })
    }
}

impl Drop for FmemHandle {
    fn drop(&mut self) {
        // SAFETY: opened by xenforeignmemory_open, closed exactly once; every mapping holds an
        // Arc to this handle, so none is left to unmap through it.
        unsafe {
            xfm::xenforeignmemory_close(self.raw.as_ptr());
        }
    }
}

/// [`ForeignFrames`] over libxenforeignmemory for one domain.
pub(super) struct XenFrames {
    pub(super) fmem: Arc<FmemHandle>,
    pub(super) domid: u32,
}

impl ForeignFrames for XenFrames {
    type Mapping = XenMapping;

    fn map(&self, frames: &[u64]) -> io::Result<XenMapping> {
        if frames.is_empty() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut errs: Vec<c_int> = vec![0; frames.len()];
        let guard = self.fmem.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: the handle is open and used under its lock; `frames` (u64 is xen_pfn_t on
        // x86-64) and `errs` each hold `frames.len()` elements and outlive the call. With a non-null `err` the library
        // reports per-frame failures there and returns null only if the call failed as a whole.
        let addr = unsafe {
            xfm::xenforeignmemory_map(
                self.fmem.raw.as_ptr(),
                self.domid,
                PROT_READ,
                frames.len(),
                frames.as_ptr(),
                errs.as_mut_ptr(),
            )
        };
        let errno = io::Error::last_os_error();
        drop(guard);
        let addr = NonNull::new(addr.cast::<u8>()).ok_or(errno)?;
        Ok(XenMapping {
            fmem: Arc::clone(&self.fmem),
            addr,
            count: frames.len(),
            errs: errs.into_boxed_slice(),
        })
    }
}

/// `count` frames mapped read-only at `addr`; `errs[i] != 0` marks a frame that did not map
/// (its part of the range must not be touched).
pub(super) struct XenMapping {
    fmem: Arc<FmemHandle>,
    addr: NonNull<u8>,
    count: usize,
    errs: Box<[c_int]>,
}

// SAFETY: the mapping is plain read-only memory owned by this value until Drop; it is never
// written through `addr`, and unmapping goes through the lock-guarded handle.
unsafe impl Send for XenMapping {}
// SAFETY: shared access only creates shared byte slices of the read-only mapping.
unsafe impl Sync for XenMapping {}

impl FrameMapping for XenMapping {
    fn frame(&self, index: usize) -> Option<&[u8]> {
        if index >= self.count || *self.errs.get(index)? != 0 {
            return None;
        }
        // SAFETY: the mapping spans count * PAGE_SIZE bytes from `addr` and frame `index`
        // (< count) mapped successfully; it stays mapped until `self` is dropped, which the
        // borrow prevents. The paused guest does not write it; other writers (a dom0 backend
        // finishing I/O, someone unpausing the domain) could change bytes under the slice,
        // the same accepted hazard as mapping a file another process rewrites (see
        // `Backing::map`): u8 has no invalid values, readers only see changed data.
        Some(unsafe { std::slice::from_raw_parts(self.addr.as_ptr().add(index * PAGE_SIZE), PAGE_SIZE) })
    }
}

impl Drop for XenMapping {
    fn drop(&mut self) {
        let _guard = self.fmem.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `addr`/`count` are exactly what xenforeignmemory_map returned and mapped; no
        // slice of it outlives `self`; unmapped once, under the handle's lock, while the
        // handle is still open (this mapping holds an Arc to it).
        unsafe {
            xfm::xenforeignmemory_unmap(self.fmem.raw.as_ptr(), self.addr.as_ptr().cast::<c_void>(), self.count);
        }
    }
}
