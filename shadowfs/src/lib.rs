//! The shadow `/proc`: pure rendering of procfs files from an `introspect::GuestSnapshot`,
//! and a FUSE filesystem serving them inside the emulator's sandbox.
//!
//! Empty until the shadowfs issue lands; see DESIGN.md, "Shadow /proc".
