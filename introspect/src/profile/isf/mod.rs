//! Volatility 3 profiles: the "Intermediate Symbol Format" (ISF), JSON, optionally xz-compressed,
//! as written by dwarf2json (`dwarf2json linux --elf vmlinux --system-map System.map`).
//!
//! An ISF has five groups: `metadata` (format version, producer, for Linux the source files),
//! `base_types` (C base types by name: size, signedness, kind), `user_types` (structs, unions
//! and classes: size and fields with byte offsets and type descriptors), `enums` and `symbols`
//! (link-time addresses; `linux_banner` carries the banner text as base64 `constant_data`).
//! dwarf2json names an anonymous struct/union member `unnamed_field_<n>` and (since format
//! 6.2) marks it `anonymous: true`; anonymous struct types themselves get `unnamed_<hash>`
//! names, and a typedef of an anonymous struct is stored under the typedef's name.
//!
//! [`Isf`] loads one for the kernel model: it answers [`TypeInfo`](crate::profile::TypeInfo) questions and provides
//! its symbols as a [`Symbols`](crate::profile::kallsyms::Symbols) table. Files come from users and the internet: the size is
//! capped, type descriptors nest at most [`MAX_TYPE_DEPTH`] deep, member lookups through
//! anonymous members are depth- and step-bounded (a struct may name itself as an anonymous
//! member), and every malformed value is an error naming its JSON path.
//!
//! [`isf_from_btf_and_symbols`] goes the other way, from a kernel's BTF and symbols.
//!
//! Loading is in `import`, generating in `export`; both share the limits and the base64 of
//! `constant_data`.

mod export;
mod import;

pub use export::isf_from_btf_and_symbols;
pub use import::{Isf, IsfMetadata};

/// Largest ISF accepted, after decompression. dwarf2json's ISFs of distribution kernels are
/// 20–100 MiB; the parsed form takes a few times the JSON's size in memory.
pub const MAX_ISF_BYTES: usize = 256 << 20;
/// Deepest nesting of type descriptors (pointer to array of pointers ...); C declarations in
/// the kernel need a handful.
pub const MAX_TYPE_DEPTH: usize = 32;
/// The only layout this crate reads (x86-64), when the ISF has no `pointer` base type.
const POINTER_SIZE: u64 = 8;

/// Why an ISF could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IsfError {
    #[error("{origin}: cannot read the ISF: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{origin}: the ISF is larger than {MAX_ISF_BYTES} bytes (after decompression); that is no kernel's \
         profile — check the file"
    )]
    TooLarge { origin: String },
    #[error(
        "{origin}: xz decompression failed: {detail}; the .xz file is truncated or corrupt — fetch or generate it again"
    )]
    Xz { origin: String, detail: String },
    #[error(
        "{origin}: not ISF JSON: {source}; the file is truncated or not a Volatility 3 symbol file — \
         generate it again (dwarf2json linux --elf vmlinux --system-map System.map)"
    )]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{origin}: {path}: {problem}; the ISF is corrupt or not for a Linux x86-64 kernel — generate it \
         again with dwarf2json"
    )]
    Invalid {
        origin: String,
        path: String,
        problem: String,
    },
}

// ---------------------------------------------------------------------------------------------
// base64 (RFC 4648 with padding, as Go's encoding/json writes []byte)
// ---------------------------------------------------------------------------------------------

/// ISF `constant_data` is standard base64; profiles written by other tools may leave out the
/// padding or carry stray low bits in the last character.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn base64_encode(data: &[u8]) -> String {
    base64::Engine::encode(&BASE64, data)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&BASE64, text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_tail_length() {
        for text in ["", "L", "Li", "Lin", "Linux version 6.1.0\n\0"] {
            let enc = base64_encode(text.as_bytes());
            assert_eq!(enc.len() % 4, 0, "{enc}");
            assert_eq!(base64_decode(&enc).as_deref(), Some(text.as_bytes()), "{enc}");
        }
        assert_eq!(base64_encode(b"Linux"), "TGludXg=");
        assert_eq!(base64_decode("not base64!"), None);
    }
}
