//! Emulation records for researchers: what one `dormouse emulate` read (its inputs, pinned by
//! hash), how it was asked to run, and what it did (phases, intercepted execs, the upper tree),
//! in the versioned format `dormouse.record/1` (`docs/schemas/records/`). On top of them:
//! the replay comparison (`compare`), two records side by side (`diff`) and figures
//! (`report`).
//!
//! Layers: `schema` (the format) → `build` (a record from an emulation's outputs) →
//! `compare`, `diff` → `report`.

pub mod build;
pub mod compare;
pub mod diff;
pub mod report;
pub mod schema;

pub use schema::{Record, SCHEMA};
