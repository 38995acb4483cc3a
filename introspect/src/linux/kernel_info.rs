//! What the kernel says about itself: its `uname` fields, banner, command line and boot id.

use super::extract::{ExtractError, KernelView};
use super::layout::UtsLayout;
use super::snapshot::Uts;

type Result<T> = std::result::Result<T, ExtractError>;

impl KernelView<'_> {
    pub fn uts(&self) -> Result<Uts> {
        let l = UtsLayout::resolve(self.types)?;
        let base = self.symbol("init_uts_ns")?.wrapping_add(l.name);
        let r = self.reader();
        let field = |off: u64, what: &str| r.inline_string(base.wrapping_add(off), l.field_len as usize, what);
        Ok(Uts {
            sysname: field(l.sysname, "init_uts_ns.name.sysname")?,
            nodename: field(l.nodename, "init_uts_ns.name.nodename")?,
            release: field(l.release, "init_uts_ns.name.release")?,
            version: field(l.version, "init_uts_ns.name.version")?,
            machine: field(l.machine, "init_uts_ns.name.machine")?,
            domainname: field(l.domainname, "init_uts_ns.name.domainname")?,
        })
    }

    pub fn banner(&self) -> Result<String> {
        let text = self
            .reader()
            .c_string(self.symbol("linux_banner")?, 1024, "linux_banner")?;
        Ok(text.trim_end_matches('\n').to_owned())
    }

    pub fn cmdline(&self) -> Result<String> {
        let r = self.reader();
        let ptr = r.u64(self.symbol("saved_command_line")?, "saved_command_line")?;
        Ok(r.c_string(ptr, 4096, "the kernel command line")?)
    }

    /// `/proc/sys/kernel/random/boot_id`: generated lazily by the guest on first read, so a
    /// guest that never read it has none.
    pub fn boot_id(&self) -> Result<Option<String>> {
        let b = self
            .reader()
            .bytes(self.symbol("sysctl_bootid")?, 16, "sysctl_bootid")?;
        if b.iter().all(|x| *x == 0) {
            return Ok(None);
        }
        let bytes: [u8; 16] = b.as_slice().try_into().unwrap_or_default();
        Ok(Some(uuid::Uuid::from_bytes(bytes).hyphenated().to_string()))
    }
}
