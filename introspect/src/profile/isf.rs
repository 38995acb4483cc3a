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
//! [`Isf`] loads one for the kernel model: it answers [`TypeInfo`] questions and provides
//! its symbols as a [`Symbols`] table. Files come from users and the internet: the size is
//! capped, type descriptors nest at most [`MAX_TYPE_DEPTH`] deep, member lookups through
//! anonymous members are depth- and step-bounded (a struct may name itself as an anonymous
//! member), and every malformed value is an error naming its JSON path.
//!
//! [`isf_from_btf_and_symbols`] goes the other way, from a kernel's BTF and symbols.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::TypeInfo;
use crate::profile::btf::{Btf, Kind, TypeId};
use crate::profile::kallsyms::{Symbols, SymbolsError};

/// Largest ISF accepted, after decompression. dwarf2json's ISFs of distribution kernels are
/// 20–100 MiB; the parsed form takes a few times the JSON's size in memory.
pub const MAX_ISF_BYTES: usize = 256 << 20;
/// Deepest nesting of type descriptors (pointer to array of pointers ...); C declarations in
/// the kernel need a handful.
pub const MAX_TYPE_DEPTH: usize = 32;
/// Deepest nesting of anonymous members followed by one member lookup (as in BTF lookups).
const MAX_ANON_DEPTH: usize = 32;
/// Fields examined by one member lookup: anonymous members may share types, so a crafted
/// ISF could make a depth-bounded search exponential; task_struct needs a few hundred.
const MEMBER_BUDGET: usize = 1 << 16;
/// Largest struct, base type or array element count accepted: nothing in a kernel comes close.
const MAX_SIZE: u64 = 1 << 32;
/// The only layout this crate reads (x86-64), when the ISF has no `pointer` base type.
const POINTER_SIZE: u64 = 8;
/// ISF format written by [`isf_from_btf_and_symbols`]: the one current dwarf2json writes.
const FORMAT: &str = "6.2.0";
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
/// The nm type letter for ISF symbols, which do not say whether they are text or data.
const UNKNOWN_KIND: u8 = b'?';

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
// The document as serde reads it (unknown keys are ignored)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawDoc {
    metadata: RawMetadata,
    #[serde(default)]
    base_types: HashMap<String, RawBase>,
    user_types: HashMap<String, RawUser>,
    #[serde(default)]
    enums: HashMap<String, RawEnum>,
    symbols: HashMap<String, RawSymbol>,
}

#[derive(Deserialize)]
struct RawMetadata {
    format: String,
    producer: Option<RawProducer>,
    linux: Option<RawLinux>,
}

#[derive(Deserialize)]
struct RawProducer {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct RawLinux {
    #[serde(default)]
    symbols: Vec<RawSource>,
    #[serde(default)]
    types: Vec<RawSource>,
}

#[derive(Deserialize)]
struct RawSource {
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawBase {
    size: u64,
}

#[derive(Deserialize)]
struct RawUser {
    kind: String,
    size: u64,
    fields: HashMap<String, RawField>,
}

#[derive(Deserialize)]
struct RawField {
    #[serde(rename = "type")]
    ty: RawType,
    offset: u64,
    #[serde(default)]
    anonymous: bool,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    name: Option<String>,
    subtype: Option<Box<RawType>>,
    count: Option<u64>,
    /// A bitfield's underlying type.
    #[serde(rename = "type")]
    ty: Option<Box<RawType>>,
}

#[derive(Deserialize)]
struct RawEnum {
    size: u64,
    #[serde(default)]
    constants: HashMap<String, i128>,
}

#[derive(Deserialize)]
struct RawSymbol {
    address: u64,
    constant_data: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The loaded profile
// ---------------------------------------------------------------------------------------------

/// A type descriptor, reduced to what layouts need: which named type, or how to size it.
#[derive(Debug)]
enum TypeRef {
    Base(String),
    /// A struct, union or class in `user_types`.
    Aggregate(String),
    Enum(String),
    Pointer,
    Array {
        count: u64,
        elem: Box<TypeRef>,
    },
    /// Sized as its underlying type, as C's `sizeof` of the declared type would be.
    Bitfield(Box<TypeRef>),
    Function,
}

#[derive(Debug)]
struct Field {
    name: String,
    offset: u64,
    ty: TypeRef,
    /// An unnamed struct/union member whose fields C lets one name directly.
    anonymous: bool,
}

#[derive(Debug)]
struct UserType {
    size: u64,
    /// Sorted by (offset, name), so searches through anonymous members are deterministic.
    fields: Vec<Field>,
}

/// What the ISF says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsfMetadata {
    /// ISF format version, e.g. "6.2.0".
    pub format: String,
    /// Tool and version that wrote it, e.g. "dwarf2json 0.9.0".
    pub producer: Option<String>,
    /// The files it was generated from, as "kind name" (e.g. "dwarf vmlinux-6.1.0-56-amd64").
    pub sources: Vec<String>,
}

/// A loaded Volatility 3 ISF: struct layouts (through [`TypeInfo`]), link-time symbols and
/// the banner of the kernel it describes.
#[derive(Debug)]
pub struct Isf {
    origin: String,
    metadata: IsfMetadata,
    base_types: HashMap<String, u64>,
    user_types: HashMap<String, UserType>,
    enums: HashMap<String, u64>,
    /// Enumerator values by (enum, enumerator).
    constants: HashMap<(String, String), i128>,
    pointer_size: u64,
    symbols: Symbols,
    banner: Option<String>,
}

impl Isf {
    /// Reads and parses the ISF at `path` (plain or xz-compressed JSON, told apart by content).
    pub fn open(path: impl AsRef<Path>) -> Result<Isf, IsfError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let io = |source| IsfError::Io {
            origin: origin.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        // One byte more than the cap tells "too large" from "exactly the cap".
        file.take(MAX_ISF_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Isf::parse(origin.clone(), &bytes)
    }

    /// Parses an ISF held in memory (plain or xz-compressed JSON); `origin` names it in errors.
    pub fn parse(origin: impl Into<String>, bytes: &[u8]) -> Result<Isf, IsfError> {
        let origin = origin.into();
        let too_large = || IsfError::TooLarge { origin: origin.clone() };
        if bytes.len() > MAX_ISF_BYTES {
            return Err(too_large());
        }
        let decompressed;
        let json = if bytes.starts_with(XZ_MAGIC) {
            let mut out = Vec::new();
            // The decoder's dictionary may not exceed what the output could use.
            let mut r = lzma_rust2::XzReader::new_mem_limit(bytes, true, (MAX_ISF_BYTES >> 10) as u32);
            r.by_ref()
                .take(MAX_ISF_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IsfError::Xz {
                    origin: origin.clone(),
                    detail: e.to_string(),
                })?;
            if out.len() > MAX_ISF_BYTES {
                return Err(too_large());
            }
            decompressed = out;
            &decompressed[..]
        } else {
            bytes
        };
        let raw: RawDoc = serde_json::from_slice(json).map_err(|source| IsfError::Json {
            origin: origin.clone(),
            source,
        })?;
        Isf::from_raw(origin, raw)
    }

    fn from_raw(origin: String, raw: RawDoc) -> Result<Isf, IsfError> {
        let invalid = |path: String, problem: String| IsfError::Invalid {
            origin: origin.clone(),
            path,
            problem,
        };
        let format = raw.metadata.format;
        let major = format.split('.').next().and_then(|m| m.parse::<u32>().ok());
        // 4.x (dwarf2json before 2020) and 6.x share the layout of every group read here.
        if !matches!(major, Some(4 | 6)) || format.split('.').count() != 3 {
            return Err(invalid(
                "metadata.format".into(),
                format!("format {format:?} is not 4.x.y or 6.x.y"),
            ));
        }
        let producer = raw.metadata.producer.and_then(|p| match (p.name, p.version) {
            (Some(n), Some(v)) => Some(format!("{n} {v}")),
            (n, v) => n.or(v),
        });
        let sources = raw
            .metadata
            .linux
            .map(|l| {
                l.symbols
                    .into_iter()
                    .chain(l.types)
                    .map(|s| format!("{} {}", s.kind.unwrap_or_default(), s.name.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();

        let sized = |path: String, size: u64| {
            if size > MAX_SIZE {
                Err(invalid(path, format!("size {size} exceeds {MAX_SIZE}")))
            } else {
                Ok(size)
            }
        };
        let mut base_types = HashMap::with_capacity(raw.base_types.len());
        for (name, b) in raw.base_types {
            let size = sized(format!("base_types.{name}.size"), b.size)?;
            base_types.insert(name, size);
        }
        let mut enums = HashMap::with_capacity(raw.enums.len());
        let mut constants = HashMap::new();
        for (name, e) in raw.enums {
            let size = sized(format!("enums.{name}.size"), e.size)?;
            constants.extend(e.constants.into_iter().map(|(c, v)| ((name.clone(), c), v)));
            enums.insert(name, size);
        }
        let mut user_types = HashMap::with_capacity(raw.user_types.len());
        for (ty, u) in raw.user_types {
            if !matches!(u.kind.as_str(), "struct" | "union" | "class") {
                return Err(invalid(
                    format!("user_types.{ty}.kind"),
                    format!("kind {:?} is not struct, union or class", u.kind),
                ));
            }
            let size = sized(format!("user_types.{ty}.size"), u.size)?;
            let mut fields = Vec::with_capacity(u.fields.len());
            for (name, f) in u.fields {
                let path = |suffix: &str| format!("user_types.{ty}.fields.{name}{suffix}");
                if f.offset > size {
                    return Err(invalid(
                        path(".offset"),
                        format!("offset {} lies beyond the type's size {size}", f.offset),
                    ));
                }
                let t = convert_type(&f.ty, 0).map_err(|(p, problem)| invalid(path(&format!(".type{p}")), problem))?;
                // dwarf2json before format 6.2 named anonymous members but did not flag them.
                let anonymous = f.anonymous || name.starts_with("unnamed_field_");
                fields.push(Field {
                    name,
                    offset: f.offset,
                    ty: t,
                    anonymous,
                });
            }
            fields.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
            user_types.insert(ty, UserType { size, fields });
        }

        let mut banner = None;
        if let Some(data) = raw.symbols.get("linux_banner").and_then(|s| s.constant_data.as_deref()) {
            let bytes = base64_decode(data)
                .ok_or_else(|| invalid("symbols.linux_banner.constant_data".into(), "is not base64".into()))?;
            // The kernel's `linux_banner[]` ends in "\n" and its NUL.
            let text = String::from_utf8_lossy(&bytes);
            banner = Some(text.trim_end_matches(['\0', '\n']).to_owned());
        }
        // Address 0 is kept: it is a real per-CPU offset (fixed_percpu_data) as often as
        // dwarf2json's "DWARF gave no location", and the kernel's kallsyms has the former.
        let symbols = Symbols::from_entries(
            raw.symbols
                .iter()
                .map(|(name, s)| (name.as_str(), s.address, UNKNOWN_KIND)),
        )
        .map_err(|e| match e {
            SymbolsError::Entry { name, problem } => invalid(format!("symbols.{name}"), problem),
            other => invalid("symbols".into(), other.to_string()),
        })?;
        let pointer_size = base_types.get("pointer").copied().unwrap_or(POINTER_SIZE);
        Ok(Isf {
            origin,
            metadata: IsfMetadata {
                format,
                producer,
                sources,
            },
            base_types,
            user_types,
            enums,
            constants,
            pointer_size,
            symbols,
            banner,
        })
    }

    /// Where the ISF came from, as given to [`Self::open`] or [`Self::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn metadata(&self) -> &IsfMetadata {
        &self.metadata
    }

    /// The symbols with their link-time addresses (relocate them like a System.map).
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// The banner of the kernel the ISF describes ("Linux version ..." without the trailing
    /// newline), from `linux_banner`'s constant data; `None` when the ISF does not carry it.
    pub fn banner(&self) -> Option<&str> {
        self.banner.as_deref()
    }

    /// Names of the structs, unions and classes, in no particular order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.user_types.keys().map(String::as_str)
    }

    /// Names of the direct fields of user type `ty` in offset order (empty if there is none).
    pub fn field_names(&self, ty: &str) -> impl Iterator<Item = &str> {
        self.user_types
            .get(ty)
            .into_iter()
            .flat_map(|u| u.fields.iter().map(|f| f.name.as_str()))
    }

    /// Offset and type of `path` ("a.b.c") in user type `ty`, looking through anonymous
    /// members as C does.
    fn member(&self, ty: &str, path: &str) -> Option<(u64, &TypeRef)> {
        let mut cont = self.user_types.get(ty)?;
        let mut offset = 0u64;
        let mut last: Option<&TypeRef> = None;
        for name in path.split('.') {
            if let Some(t) = last {
                // Only a struct or union member has members (not a pointer, array or bitfield).
                let TypeRef::Aggregate(inner) = t else { return None };
                cont = self.user_types.get(inner)?;
            }
            let mut budget = MEMBER_BUDGET;
            let (off, t) = self.find_field(cont, name, 0, &mut budget)?;
            offset = offset.checked_add(off)?;
            last = Some(t);
        }
        Some((offset, last?))
    }

    /// `name` among the fields of `cont`, else inside its anonymous members (depth first, in
    /// offset order); the offset is relative to `cont`.
    fn find_field<'a>(
        &'a self,
        cont: &'a UserType,
        name: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Option<(u64, &'a TypeRef)> {
        if depth > MAX_ANON_DEPTH {
            return None;
        }
        *budget = budget.checked_sub(cont.fields.len())?;
        // C forbids a name both directly and inside an anonymous member, so named fields can
        // be tried first.
        if let Some(f) = cont.fields.iter().find(|f| f.name == name) {
            return Some((f.offset, &f.ty));
        }
        for f in cont.fields.iter().filter(|f| f.anonymous) {
            if let TypeRef::Aggregate(inner) = &f.ty
                && let Some(inner) = self.user_types.get(inner)
                && let Some((off, t)) = self.find_field(inner, name, depth + 1, budget)
            {
                return Some((f.offset.checked_add(off)?, t));
            }
        }
        None
    }

    /// `sizeof` of a type descriptor; `None` for functions and unknown names. Descriptors are
    /// trees at most [`MAX_TYPE_DEPTH`] deep, and named types are sized by their recorded
    /// size, so this cannot loop.
    fn size_of(&self, t: &TypeRef) -> Option<u64> {
        match t {
            TypeRef::Base(name) => self.base_types.get(name).copied(),
            TypeRef::Aggregate(name) => self.user_types.get(name).map(|u| u.size),
            TypeRef::Enum(name) => self.enums.get(name).copied(),
            TypeRef::Pointer => Some(self.pointer_size),
            TypeRef::Array { count, elem } => count.checked_mul(self.size_of(elem)?),
            TypeRef::Bitfield(inner) => self.size_of(inner),
            TypeRef::Function => None,
        }
    }
}

/// Layouts for the kernel model; every failed lookup reads as "not known".
impl TypeInfo for Isf {
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
        self.member(ty, member).map(|(offset, _)| offset)
    }

    fn struct_size(&self, ty: &str) -> Option<u64> {
        self.user_types.get(ty).map(|u| u.size)
    }

    fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
        self.size_of(self.member(ty, member)?.1)
    }

    fn enum_value(&self, ty: &str, name: &str) -> Option<i128> {
        if !ty.is_empty() {
            return self.constants.get(&(ty.to_owned(), name.to_owned())).copied();
        }
        // Anonymous enums carry made-up names here; an enumerator defined with different
        // values in several enums is ambiguous, so it is not known.
        let mut values = self.constants.iter().filter(|((_, n), _)| n == name).map(|(_, v)| *v);
        let first = values.next()?;
        values.all(|v| v == first).then_some(first)
    }
}

/// Converts a type descriptor; an error carries the JSON path below the descriptor and the
/// problem.
fn convert_type(raw: &RawType, depth: usize) -> Result<TypeRef, (String, String)> {
    if depth >= MAX_TYPE_DEPTH {
        return Err((
            String::new(),
            format!("type descriptors nest deeper than {MAX_TYPE_DEPTH}"),
        ));
    }
    let name = || {
        raw.name
            .clone()
            .ok_or_else(|| (".name".to_owned(), format!("a {} descriptor needs a name", raw.kind)))
    };
    let inner = |t: &Option<Box<RawType>>, key: &str| match t {
        Some(t) => convert_type(t, depth + 1).map_err(|(p, m)| (format!(".{key}{p}"), m)),
        None => Err((format!(".{key}"), format!("a {} descriptor needs a {key}", raw.kind))),
    };
    Ok(match raw.kind.as_str() {
        "base" => TypeRef::Base(name()?),
        "struct" | "union" | "class" => TypeRef::Aggregate(name()?),
        "enum" => TypeRef::Enum(name()?),
        "function" => TypeRef::Function,
        "pointer" => {
            // The pointee does not matter for layouts, but must be well-formed.
            inner(&raw.subtype, "subtype")?;
            TypeRef::Pointer
        }
        "array" => {
            let count = raw
                .count
                .ok_or_else(|| (".count".to_owned(), "an array descriptor needs a count".to_owned()))?;
            if count > MAX_SIZE {
                return Err((".count".to_owned(), format!("array count {count} exceeds {MAX_SIZE}")));
            }
            TypeRef::Array {
                count,
                elem: Box::new(inner(&raw.subtype, "subtype")?),
            }
        }
        "bitfield" => TypeRef::Bitfield(Box::new(inner(&raw.ty, "type")?)),
        other => {
            return Err((
                ".kind".to_owned(),
                format!(
                    "kind {other:?} is not one of base, struct, union, class, enum, pointer, array, bitfield, function"
                ),
            ));
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Generating an ISF from BTF and a symbol table
// ---------------------------------------------------------------------------------------------

/// Writes a Volatility 3 ISF (format 6.2.0, as dwarf2json writes it) describing the kernel
/// whose types are `btf` and whose link-time symbols are `symbols` (a System.map), with
/// `banner` (the text of `/proc/version`) stored as `linux_banner`'s constant data so that
/// Volatility's banner scan — and [`Isf::banner`] — can identify the kernel. The banner is
/// dropped when `symbols` has no `linux_banner`, since an ISF keeps it on that symbol.
///
/// Every struct, union, enum and base type of the BTF is written, with dwarf2json's
/// conventions: typedefs and qualifiers are resolved into the descriptors, a typedef of an
/// anonymous struct/union becomes a user type of the typedef's name, anonymous members are
/// `unnamed_field_<n>` with `anonymous: true`, anonymous types are `unnamed_<16 hex digits>`
/// (from the BTF type id, where dwarf2json hashes the DWARF), bitfields carry their byte offset
/// and `bit_position` within that byte. BTF types only the per-CPU variables among the
/// symbols; those get their types, so do a few well-known globals (`init_task`, `modules`,
/// ...) that Volatility's plugins read as typed objects, `linux_banner` is a char array, and
/// the rest are `void`, as in dwarf2json's System.map import. A name that occurs several
/// times keeps its highest address, as that import does. Where two BTF types share a name the first by type
/// id wins, as `Btf::find_struct` picks it. The size of the output is bounded by that of
/// the inputs: descriptors stop at [`MAX_TYPE_DEPTH`] (a member whose type nests deeper, or
/// that has no type, such as padding, is left out).
pub fn isf_from_btf_and_symbols(btf: &Btf, symbols: &Symbols, banner: Option<&str>) -> Value {
    let g = Generator { btf };
    let mut base_types = BTreeMap::new();
    base_types.insert(
        "void".to_owned(),
        json!({"size": 0, "signed": false, "kind": "void", "endian": "little"}),
    );
    base_types.insert(
        "pointer".to_owned(),
        json!({"size": POINTER_SIZE, "signed": false, "kind": "int", "endian": "little"}),
    );
    let mut user_types = Map::new();
    let mut enum_ids = Vec::new();
    for id in 1..btf.type_count() {
        let (Some(kind), Some(name)) = (btf.kind(id), btf.name(id)) else {
            continue;
        };
        match kind {
            Kind::Int | Kind::Float if !name.is_empty() && !base_types.contains_key(name) => {
                base_types.insert(name.to_owned(), g.base_type(id, kind));
            }
            Kind::Struct | Kind::Union => {
                let name = g.aggregate_name(id);
                if !user_types.contains_key(&name)
                    && let Some(v) = g.aggregate(id)
                {
                    user_types.insert(name, v);
                }
            }
            Kind::Typedef if !user_types.contains_key(name) => {
                if let Some(target) = btf.target(id).filter(|&t| g.is_anonymous_aggregate(t))
                    && let Some(v) = g.aggregate(target)
                {
                    user_types.insert(name.to_owned(), v);
                }
            }
            Kind::Enum | Kind::Enum64 => enum_ids.push(id),
            _ => {}
        }
    }
    // An enum's `base` is the first int base type (by name) of its size and signedness.
    let mut enums = Map::new();
    for id in enum_ids {
        let name = g.enum_name(id);
        if enums.contains_key(&name) {
            continue;
        }
        let size = btf.size_of(id).unwrap_or(0);
        let constants: Map<String, Value> = btf
            .enumerators(id)
            .into_iter()
            .flatten()
            .map(|(n, v)| {
                (
                    n.to_owned(),
                    i64::try_from(v).map_or_else(|_| json!(v as u64), |v| json!(v)),
                )
            })
            .collect();
        let signed = constants.values().any(|v| v.as_i64().is_some_and(|v| v < 0));
        let base = base_types
            .iter()
            .find(|(_, b)| b["kind"] == "int" && b["size"] == size && b["signed"] == signed)
            .map_or("void", |(n, _)| n.as_str());
        enums.insert(name, json!({"size": size, "base": base, "constants": constants}));
    }

    let mut syms = Map::new();
    for s in symbols.iter() {
        // Address order: a later duplicate replaces an earlier one, as in dwarf2json.
        syms.insert(
            s.name.to_owned(),
            json!({"address": s.address, "type": g.symbol_type(s.name)}),
        );
    }
    if let Some(banner) = banner
        && let Some(Value::Object(sym)) = syms.get_mut("linux_banner")
    {
        let data = format!("{}\n\0", banner.trim_end_matches(['\0', '\n']));
        sym.insert(
            "type".into(),
            json!({"kind": "array", "count": data.len(), "subtype": {"kind": "base", "name": "char"}}),
        );
        sym.insert("constant_data".into(), Value::String(base64_encode(data.as_bytes())));
    }

    json!({
        "metadata": {
            "format": FORMAT,
            "producer": {"name": "dormouse", "version": env!("CARGO_PKG_VERSION")},
            // Volatility's schema knows only dwarf, symtab and system-map sources, and the
            // caller's file names are not known here.
            "linux": {},
        },
        "base_types": base_types,
        "user_types": user_types,
        "enums": enums,
        "symbols": syms,
    })
}

/// Kernel globals whose C type has been stable for many releases and that Volatility's Linux
/// plugins read as typed objects (`object_from_symbol`): (symbol, struct, through a pointer).
/// BTF describes only per-CPU variables, so the types of other globals come from here.
const KNOWN_GLOBALS: &[(&str, &str, bool)] = &[
    ("init_task", "task_struct", false),
    ("init_mm", "mm_struct", false),
    ("init_files", "files_struct", false),
    ("init_fs", "fs_struct", false),
    ("init_cred", "cred", false),
    ("init_nsproxy", "nsproxy", false),
    ("init_uts_ns", "uts_namespace", false),
    ("init_pid_ns", "pid_namespace", false),
    ("init_net", "net", false),
    ("modules", "list_head", false),
    ("super_blocks", "list_head", false),
    ("net_namespace_list", "list_head", false),
    ("file_systems", "file_system_type", true),
    ("prb", "printk_ringbuffer", true),
];

struct Generator<'a> {
    btf: &'a Btf,
}

impl Generator<'_> {
    /// A symbol's type: a per-CPU variable's from the BTF, a well-known global's, else void.
    fn symbol_type(&self, name: &str) -> Value {
        if let Ok(var) = self.btf.datasec_var(".data..percpu", name)
            && let Some(t) = self.descriptor(var.type_id, 0)
        {
            return t;
        }
        match KNOWN_GLOBALS.iter().find(|(n, ..)| *n == name) {
            Some(&(_, ty, pointer)) if self.btf.find_struct(ty).is_some() => {
                let t = json!({"kind": "struct", "name": ty});
                if pointer {
                    json!({"kind": "pointer", "subtype": t})
                } else {
                    t
                }
            }
            _ => json!({"kind": "base", "name": "void"}),
        }
    }

    fn base_type(&self, id: TypeId, kind: Kind) -> Value {
        let size = self.btf.size_of(id).unwrap_or(0);
        // dwarf2json: only unsigned integers and unsigned chars are unsigned; bool and
        // float count as signed.
        let (kind, signed) = match (kind, self.btf.int_encoding(id)) {
            (Kind::Float, _) => ("float", true),
            (_, Ok(e)) if e.bool => ("bool", true),
            (_, Ok(e)) if e.char || self.btf.name(id).is_some_and(|n| n.contains("char")) => ("char", e.signed),
            (_, Ok(e)) => ("int", e.signed),
            (_, Err(_)) => ("int", true),
        };
        json!({"size": size, "signed": signed, "kind": kind, "endian": "little"})
    }

    fn is_anonymous_aggregate(&self, id: TypeId) -> bool {
        matches!(self.btf.kind(id), Some(Kind::Struct | Kind::Union)) && self.btf.name(id) == Some("")
    }

    fn aggregate_name(&self, id: TypeId) -> String {
        match self.btf.name(id) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => format!("unnamed_{id:016x}"),
        }
    }

    fn enum_name(&self, id: TypeId) -> String {
        self.aggregate_name(id)
    }

    fn aggregate(&self, id: TypeId) -> Option<Value> {
        let kind = if self.btf.kind(id)? == Kind::Union {
            "union"
        } else {
            "struct"
        };
        let size = self.btf.size_of(id).ok()?;
        let mut fields = Map::new();
        let mut anonymous = 0u32;
        for m in self.btf.members(id).ok()? {
            let Some(ty) = self.descriptor(m.type_id, 0) else {
                continue;
            };
            let byte = u64::from(m.bit_offset / 8);
            let mut field = match m.bitfield_size {
                Some(bits) => json!({
                    "offset": byte,
                    "type": {"kind": "bitfield", "bit_position": m.bit_offset % 8, "bit_length": bits, "type": ty},
                }),
                None => json!({"offset": byte, "type": ty}),
            };
            let name = if m.name.is_empty() {
                // Unnamed bitfields are padding, which DWARF (and so dwarf2json) leaves out.
                if m.bitfield_size.is_some() {
                    continue;
                }
                field["anonymous"] = Value::Bool(true);
                anonymous += 1;
                format!("unnamed_field_{:x}", anonymous - 1)
            } else {
                m.name.to_owned()
            };
            fields.insert(name, field);
        }
        Some(json!({"kind": kind, "size": size, "fields": fields}))
    }

    /// dwarf2json's descriptor of type `id`; `None` for types a member cannot have, and past
    /// [`MAX_TYPE_DEPTH`] (crafted BTF can make typedef chains cyclic).
    fn descriptor(&self, id: TypeId, depth: usize) -> Option<Value> {
        if depth >= MAX_TYPE_DEPTH {
            return None;
        }
        let btf = self.btf;
        Some(match btf.kind(id)? {
            Kind::Void => json!({"kind": "base", "name": "void"}),
            Kind::Int | Kind::Float => json!({"kind": "base", "name": btf.name(id)?}),
            Kind::Ptr => json!({"kind": "pointer", "subtype": self.descriptor(btf.target(id)?, depth + 1)?}),
            Kind::Array => {
                let a = btf.array(id).ok()?;
                json!({"kind": "array", "count": a.count, "subtype": self.descriptor(a.elem, depth + 1)?})
            }
            Kind::Struct => json!({"kind": "struct", "name": self.aggregate_name(id)}),
            Kind::Union => json!({"kind": "union", "name": self.aggregate_name(id)}),
            // A declared but never defined struct: dwarf2json names it, without a user type.
            Kind::Fwd => json!({"kind": "struct", "name": btf.name(id)?}),
            Kind::Enum | Kind::Enum64 => json!({"kind": "enum", "name": self.enum_name(id)}),
            Kind::Typedef => {
                let target = btf.target(id)?;
                if self.is_anonymous_aggregate(target) {
                    let kind = if btf.kind(target)? == Kind::Union {
                        "union"
                    } else {
                        "struct"
                    };
                    json!({"kind": kind, "name": btf.name(id)?})
                } else {
                    self.descriptor(target, depth + 1)?
                }
            }
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                self.descriptor(btf.target(id)?, depth + 1)?
            }
            Kind::Func | Kind::FuncProto => json!({"kind": "function"}),
            Kind::Var | Kind::Datasec | Kind::DeclTag => return None,
        })
    }
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
