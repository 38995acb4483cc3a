//! Package metadata of Debian and RPM guests, parsed as hostile input: every length, count and
//! loop is bounded, nothing panics on any input, and errors say where (file, line, offset) the
//! data went wrong.
//!
//! Pure: no I/O beyond what callers hand in (except [`rpmdb`], which opens an SQLite file the
//! caller names). Shared by `dormouse check` and the emulator's bundle (package changes before
//! and after an emulated update).

pub mod apt;
pub mod deb822;
pub mod debversion;
pub mod dpkg;
pub mod rpmdb;
pub mod rpmheader;
pub mod rpmmd;
pub mod rpmversion;
pub mod yum;

pub use debversion::DebVersion;
