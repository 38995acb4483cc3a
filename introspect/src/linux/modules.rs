//! `/proc/modules`: the loaded modules with their sizes, users, states and taints.

use super::extract::{ExtractError, KernelView};
use super::layout::{ModuleLayout, ModuleSize, ModuleUnloadLayout};
use super::reader::ReadError;
use super::snapshot::Module;

type Result<T> = std::result::Result<T, ExtractError>;

/// `module.mem[]` has `MOD_MEM_NUM_TYPES` (7) entries; more means a corrupt type source.
const MAX_MODULE_MEMS: u64 = 16;
/// `MODULE_REF_BASE`: a live module holds one reference on itself, which
/// `module_refcount()` does not count.
const MODULE_REF_BASE: i32 = 1;
/// `taint_flags[].c_true` by taint bit (kernel/panic.c, through TAINT_FWCTL of 6.15). Only
/// module taints (P F C O E K X T N J) are ever set in `module.taints`.
const TAINT_LETTERS: &[u8; 20] = b"PFSRMBUDAWCIOELKXTNJ";

impl KernelView<'_> {
    /// Loaded modules, newest first like `/proc/modules`.
    pub fn modules(&self) -> Result<Vec<Module>> {
        let l = ModuleLayout::resolve(self.types)?;
        let r = self.reader();
        r.list(self.symbol("modules")?, l.list, "the module list")?
            .into_iter()
            .map(|m| {
                let size = match &l.size {
                    ModuleSize::Layouts {
                        offsets,
                        size_in_layout,
                    } => offsets.iter().try_fold(0u64, |sum, off| {
                        Ok::<_, ReadError>(
                            sum + r.u32(m.wrapping_add(off + size_in_layout), "module layout size")? as u64,
                        )
                    })?,
                    ModuleSize::MemArray {
                        mem,
                        stride,
                        count,
                        size_in_mem,
                    } => (0..(*count).min(MAX_MODULE_MEMS)).try_fold(0u64, |sum, i| {
                        Ok::<_, ReadError>(
                            sum + r.u32(m.wrapping_add(mem + i * stride + size_in_mem), "module_memory.size")? as u64,
                        )
                    })?,
                };
                let state = match r.u32(m.wrapping_add(l.state), "module.state")? {
                    0 => "Live",
                    1 => "Loading",
                    2 => "Unloading",
                    _ => "Unformed",
                };
                let (refcount, used_by, permanent) = match &l.unload {
                    Some(u) => self.module_users(u, &l, m)?,
                    None => (None, Vec::new(), false),
                };
                let taints = r.u64(m.wrapping_add(l.taints), "module.taints")?;
                Ok(Module {
                    name: r.inline_string(m.wrapping_add(l.name), l.name_len as usize, "module.name")?,
                    size,
                    refcount,
                    used_by,
                    permanent,
                    state: state.to_owned(),
                    address: r.u64(m.wrapping_add(l.text_base), "module text base")?,
                    taints: TAINT_LETTERS
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| taints & (1 << bit) != 0)
                        .map(|(_, c)| char::from(*c))
                        .collect(),
                })
            })
            .collect()
    }

    /// `print_unload_info()`'s data: `module_refcount()`, the names of the modules on
    /// `source_list` (those using this one) and whether it is permanent.
    fn module_users(
        &self,
        u: &ModuleUnloadLayout,
        l: &ModuleLayout,
        m: u64,
    ) -> Result<(Option<i32>, Vec<String>, bool)> {
        let r = self.reader();
        let refcount = r
            .i32(m.wrapping_add(u.refcnt), "module.refcnt")?
            .wrapping_sub(MODULE_REF_BASE);
        let used_by = r
            .list(m.wrapping_add(u.source_list), u.use_source_list, "module.source_list")?
            .into_iter()
            .map(|using| {
                let source = r.u64(using.wrapping_add(u.use_source), "module_use.source")?;
                r.inline_string(
                    source.wrapping_add(l.name),
                    l.name_len as usize,
                    "module_use.source->name",
                )
            })
            .collect::<std::result::Result<_, _>>()?;
        let init = r.u64(m.wrapping_add(u.init), "module.init")?;
        let exit = r.u64(m.wrapping_add(u.exit), "module.exit")?;
        Ok((Some(refcount), used_by, init != 0 && exit == 0))
    }
}
