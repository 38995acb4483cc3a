//! What the running kernel is: its symbols (kallsyms in RAM, System.map) and its type layouts
//! (BTF in RAM or in a vmlinuz, a Volatility ISF), located with VMCOREINFO and the kernel
//! image's mapping. The walkers above see only [`TypeInfo`] and symbol lookups.

pub mod btf;
pub mod isf;
pub mod kallsyms;
pub mod kernel_image;
pub mod kernel_map;
pub mod vmcoreinfo;

/// A source of struct layouts.
pub trait TypeInfo {
    /// Byte offset of `member` — a dotted path that may cross anonymous unions/structs and
    /// named nested structs — inside struct or union `ty`.
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64>;
    /// Size in bytes of struct or union `ty`.
    fn struct_size(&self, ty: &str) -> Option<u64>;
    /// Size in bytes of member `member` of `ty` (for inline arrays such as `comm[16]`).
    fn member_size(&self, ty: &str, member: &str) -> Option<u64>;
    /// Value of enumerator `name` of enum `ty` (e.g. `node_stat_item`, `NR_FILE_PAGES`): the
    /// indices of the kernel's counter arrays move between releases and configurations. An
    /// empty `ty` looks in every enum, for the kernel's anonymous ones (`MM_FILEPAGES`).
    fn enum_value(&self, ty: &str, name: &str) -> Option<i128>;
}
