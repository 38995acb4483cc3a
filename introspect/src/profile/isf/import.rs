//! Loading an ISF: the document as serde reads it, checked and reduced to the layouts and
//! symbols the kernel model asks for.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::{IsfError, MAX_ISF_BYTES, MAX_TYPE_DEPTH, POINTER_SIZE, base64_decode};
use crate::profile::TypeInfo;
use crate::profile::kallsyms::{Symbols, SymbolsError};

/// Deepest nesting of anonymous members followed by one member lookup (as in BTF lookups).
const MAX_ANON_DEPTH: usize = 32;
/// Fields examined by one member lookup: anonymous members may share types, so a crafted
/// ISF could make a depth-bounded search exponential; task_struct needs a few hundred.
const MEMBER_BUDGET: usize = 1 << 16;
/// Largest struct, base type or array element count accepted: nothing in a kernel comes close.
const MAX_SIZE: u64 = 1 << 32;
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
/// The nm type letter for ISF symbols, which do not say whether they are text or data.
const UNKNOWN_KIND: u8 = b'?';

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
