//! x86-64 address translation over a memory source: page-table walks ([`paging`]) and the
//! virtual-memory view the layers above read through ([`virt`]).

pub mod paging;
pub mod virt;
