//! Where the fields the snapshot needs live in this kernel's structures.
//!
//! Offsets are looked up once, by name, in whatever type source the profile has (BTF carved
//! from RAM, BTF of the guest's vmlinuz, a Volatility ISF), and kept as plain numbers; the
//! walk itself never asks the type source again. Each feature resolves its own group so that
//! a kernel lacking, say, the module list still yields tasks.

pub use crate::profile::TypeInfo;

// One file per feature group; the layouts stay reachable here, at `layout::X`, as before the split.
mod module;
mod mount;
mod net;
mod sysctl;
mod system;
mod task;
mod task_detail;
mod tty;
mod uts;

pub use module::{ModuleLayout, ModuleSize, ModuleUnloadLayout};
pub use mount::{
    DevptsOptionsLayout, FsOptionsLayout, FsTypeLayout, KernfsOptionsLayout, MountLayout, ProcOptionsLayout,
    ShmemOptionsLayout,
};
pub use net::NetDevLayout;
pub use sysctl::{CtlTableLayout, DevinetConfLayout, NetConfLayout};
pub use system::{
    BlockdevLayout, CpuInfoLayout, CpuStatLayout, HstateLayout, MemLayout, NODE_STAT_ITEMS, SwapLayout, TickIdleLayout,
    TimekeeperLayout, ZONE_STAT_ITEMS,
};
pub use task::{KthreadNameLayout, TaskLayout};
pub use task_detail::{MmLayout, TaskDetailLayout, UserRegsLayout};
pub use tty::TtyDriverLayout;
pub use uts::UtsLayout;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel's type information has no {ty}.{member}, which {feature} needs")]
pub struct LayoutError {
    pub ty: String,
    pub member: String,
    pub feature: &'static str,
}

struct Resolver<'a> {
    types: &'a dyn TypeInfo,
    feature: &'static str,
}

impl Resolver<'_> {
    fn off(&self, ty: &str, member: &str) -> Result<u64, LayoutError> {
        self.types
            .member_offset(ty, member)
            .ok_or_else(|| self.missing(ty, member))
    }

    fn size(&self, ty: &str, member: &str) -> Result<u64, LayoutError> {
        self.types
            .member_size(ty, member)
            .ok_or_else(|| self.missing(ty, member))
    }

    fn struct_size(&self, ty: &str) -> Result<u64, LayoutError> {
        self.types.struct_size(ty).ok_or_else(|| self.missing(ty, "(size)"))
    }

    /// An enumerator used as an array index; values beyond any kernel array are refused.
    fn index(&self, ty: &str, name: &str) -> Result<u64, LayoutError> {
        self.types
            .enum_value(ty, name)
            .filter(|v| (0..4096).contains(v))
            .map(|v| v as u64)
            .ok_or_else(|| self.missing(ty, name))
    }

    fn missing(&self, ty: &str, member: &str) -> LayoutError {
        LayoutError {
            ty: ty.to_owned(),
            member: member.to_owned(),
            feature: self.feature,
        }
    }
}

/// Records every question the layouts ask, answering from `inner`.
struct Recorder<'a> {
    inner: &'a dyn TypeInfo,
    asked: std::cell::RefCell<Vec<(&'static str, String, String)>>,
}

impl TypeInfo for Recorder<'_> {
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
        self.asked
            .borrow_mut()
            .push(("offset", ty.to_owned(), member.to_owned()));
        self.inner.member_offset(ty, member)
    }

    fn struct_size(&self, ty: &str) -> Option<u64> {
        self.asked.borrow_mut().push(("size", ty.to_owned(), String::new()));
        self.inner.struct_size(ty)
    }

    fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
        self.asked
            .borrow_mut()
            .push(("member size", ty.to_owned(), member.to_owned()));
        self.inner.member_size(ty, member)
    }

    fn enum_value(&self, ty: &str, name: &str) -> Option<i128> {
        self.asked
            .borrow_mut()
            .push(("enum value", ty.to_owned(), name.to_owned()));
        self.inner.enum_value(ty, name)
    }
}

/// Where `given` answers differently from `reference` for any layout the snapshot uses, as
/// readable lines (`task_struct.pid: offset 2424, kernel has 2416`). Empty when they agree.
pub fn layout_differences(reference: &dyn TypeInfo, given: &dyn TypeInfo) -> Vec<String> {
    let recorder = Recorder {
        inner: reference,
        asked: Default::default(),
    };
    // Asked of the kernel's own types, these are exactly the questions the walk will ask.
    let _ = UtsLayout::resolve(&recorder);
    let _ = TaskLayout::resolve(&recorder);
    let _ = FsTypeLayout::resolve(&recorder);
    let _ = ModuleLayout::resolve(&recorder);
    let _ = CtlTableLayout::resolve(&recorder);
    let _ = NetConfLayout::resolve(&recorder);
    let _ = DevinetConfLayout::resolve(&recorder);
    let _ = MountLayout::resolve(&recorder);
    let _ = NetDevLayout::resolve(&recorder);
    let _ = TaskDetailLayout::resolve(&recorder);
    let _ = CpuStatLayout::resolve(&recorder);
    let _ = TimekeeperLayout::resolve(&recorder);
    let _ = CpuInfoLayout::resolve(&recorder);
    let _ = MemLayout::resolve(&recorder);
    let _ = SwapLayout::resolve(&recorder);
    let _ = TtyDriverLayout::resolve(&recorder);
    let _ = FsOptionsLayout::resolve(&recorder);
    let show = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    recorder
        .asked
        .into_inner()
        .into_iter()
        .filter_map(|(what, ty, member)| {
            let (want, got) = match what {
                "offset" => (reference.member_offset(&ty, &member), given.member_offset(&ty, &member)),
                "enum value" => (
                    reference.enum_value(&ty, &member).map(|v| v as u64),
                    given.enum_value(&ty, &member).map(|v| v as u64),
                ),
                "size" => (reference.struct_size(&ty), given.struct_size(&ty)),
                _ => (reference.member_size(&ty, &member), given.member_size(&ty, &member)),
            };
            let name = if member.is_empty() {
                ty
            } else {
                format!("{ty}.{member}")
            };
            (want != got).then(|| format!("{name}: {what} {}, kernel has {}", show(got), show(want)))
        })
        .collect()
}
