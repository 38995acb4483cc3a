//! `struct module` and the module list behind `/proc/modules`.

use super::{LayoutError, Resolver, TypeInfo};

/// How a module's size is recorded: separate layouts (≤ 6.3) or a `mem[]` array (6.4+).
#[derive(Debug, Clone)]
pub enum ModuleSize {
    Layouts {
        offsets: Vec<u64>,
        size_in_layout: u64,
    },
    MemArray {
        mem: u64,
        stride: u64,
        count: u64,
        size_in_mem: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ModuleLayout {
    pub list: u64,
    pub name: u64,
    pub name_len: u64,
    pub state: u64,
    pub size: ModuleSize,
    /// Where the text base `/proc/modules` prints is: `core_layout.base` (≤ 6.3) or
    /// `mem[MOD_TEXT].base` (6.4+).
    pub text_base: u64,
    pub taints: u64,
    /// The reference count and users, kept only with CONFIG_MODULE_UNLOAD.
    pub unload: Option<ModuleUnloadLayout>,
}

#[derive(Debug, Clone)]
pub struct ModuleUnloadLayout {
    pub refcnt: u64,
    /// `module.source_list`: `struct module_use`s linked by their `source_list`, whose
    /// `source` is a module using this one.
    pub source_list: u64,
    pub use_source_list: u64,
    pub use_source: u64,
    /// `module.init` and `module.exit`: a module with an init but no exit is `[permanent]`.
    pub init: u64,
    pub exit: u64,
}

impl ModuleLayout {
    pub fn resolve(types: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let r = Resolver {
            types,
            feature: "the module list",
        };
        let (size, text_base) = if let Some(mem) = types.member_offset("module", "mem") {
            let stride = r.struct_size("module_memory")?;
            let text_base = mem
                .wrapping_add(stride.wrapping_mul(r.index("mod_mem_type", "MOD_TEXT")?))
                .wrapping_add(r.off("module_memory", "base")?);
            let total = r.size("module", "mem")?;
            let size = ModuleSize::MemArray {
                mem,
                stride,
                count: total.checked_div(stride).unwrap_or(0),
                size_in_mem: r.off("module_memory", "size")?,
            };
            (size, text_base)
        } else {
            let offsets = ["core_layout", "init_layout", "data_layout"]
                .iter()
                .filter_map(|l| types.member_offset("module", l))
                .collect::<Vec<_>>();
            if offsets.is_empty() {
                return Err(r.missing("module", "core_layout"));
            }
            let size = ModuleSize::Layouts {
                offsets,
                size_in_layout: r.off("module_layout", "size")?,
            };
            (
                size,
                r.off("module", "core_layout")?
                    .wrapping_add(r.off("module_layout", "base")?),
            )
        };
        let unload = types.member_offset("module", "refcnt").and_then(|refcnt| {
            Some(ModuleUnloadLayout {
                refcnt,
                source_list: types.member_offset("module", "source_list")?,
                use_source_list: types.member_offset("module_use", "source_list")?,
                use_source: types.member_offset("module_use", "source")?,
                init: types.member_offset("module", "init")?,
                exit: types.member_offset("module", "exit")?,
            })
        });
        Ok(Self {
            list: r.off("module", "list")?,
            name: r.off("module", "name")?,
            name_len: r.size("module", "name")?,
            state: r.off("module", "state")?,
            size,
            text_base,
            taints: r.off("module", "taints")?,
            unload,
        })
    }
}
