//! BPF Type Format (BTF): the kernel's own description of its types, used as the source of
//! struct layouts, enum values and per-CPU variable offsets when no debug info exists.
//!
//! [`Btf::parse`] validates a whole blob up front (every record, name and type reference
//! inside the blob), so lookups afterwards only follow ids known to exist. Blobs come from
//! guest memory or guest disks and are hostile: nothing here panics or recurses without a
//! bound, and chains of typedefs/qualifiers are cut off at 32 links (crafted BTF can
//! make them cyclic). [`find_kernel_btf`] carves the running kernel's `.BTF` out of a memory
//! image.
//!
//! Format: `include/uapi/linux/btf.h`, `Documentation/bpf/btf.rst`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::source::memory::{PAGE_SHIFT, PAGE_SIZE, PhysMemory};

/// A BTF type id; 0 is `void`.
pub type TypeId = u32;

const MAGIC: u16 = 0xEB9F;
const HEADER_LEN: usize = 24;
/// Longest typedef/qualifier/array chain and deepest anonymous-member nesting followed.
/// libbpf gives up at 32 too; real kernels need a handful.
const MAX_DEPTH: usize = 32;
/// Members examined by one member lookup. Anonymous members may share types, so crafted BTF
/// could make a depth-bounded search exponential; task_struct needs a few hundred.
const MEMBER_BUDGET: usize = 1 << 16;
/// BTF does not record pointer width; this crate reads x86-64 guests.
const POINTER_SIZE: u64 = 8;
/// Largest blob [`find_kernel_btf`] reads: 6.x distribution kernels have 4–8 MiB.
const MAX_CARVED_LEN: u64 = 128 << 20;
/// Plausible headers [`find_kernel_btf`] reads and parses before giving up: each may cost
/// `MAX_CARVED_LEN`, and a guest can plant as many as it likes.
const MAX_CARVE_CANDIDATES: usize = 8;

/// The kind of a BTF type (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Type id 0.
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(kind: u32) -> Option<Kind> {
        use Kind::*;
        const KINDS: [Kind; 19] = [
            Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict, Func, FuncProto, Var,
            Datasec, Float, DeclTag, TypeTag, Enum64,
        ];
        KINDS.get(usize::try_from(kind).ok()?.checked_sub(1)?).copied()
    }

    /// Bytes of kind-specific data after the 12-byte common record.
    fn extra_len(self, vlen: u32) -> u64 {
        let vlen = u64::from(vlen);
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array | Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => {
                12 * if self == Kind::Array { 1 } else { vlen }
            }
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }

    /// Kinds whose `size_or_type` field is a type id.
    fn refers(self) -> bool {
        matches!(
            self,
            Kind::Ptr
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::Func
                | Kind::Var
                | Kind::DeclTag
                | Kind::TypeTag
                | Kind::FuncProto
        )
    }
}

/// An error parsing BTF or looking something up in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob violates the format.
    #[error(
        "{origin}: BTF byte offset {offset:#x}: {problem}; the blob is truncated, corrupt or not BTF — \
         extract it again (vmlinux `.BTF` section, /sys/kernel/btf/vmlinux, or carve it from a memory image)"
    )]
    Malformed {
        origin: String,
        offset: u64,
        problem: String,
    },
    /// No type (or enumerator, variable, section) of that name.
    #[error(
        "{origin}: no {what} named `{name}` in the BTF; this kernel may not have it (check the kernel \
         version and configuration) or the name is misspelt"
    )]
    NotFound {
        origin: String,
        what: &'static str,
        name: String,
    },
    /// A type exists but cannot answer the question (wrong kind, no such member, cycle).
    #[error("{origin}: BTF type id {id} `{name}` ({kind:?}): {problem}")]
    Type {
        origin: String,
        id: TypeId,
        name: String,
        kind: Kind,
        problem: String,
    },
}

/// Result alias of this module.
pub type BtfResult<T> = std::result::Result<T, BtfError>;

/// The common part of one type record, with the location of its kind-specific data.
#[derive(Clone, Copy, Debug)]
struct Rec {
    name_off: u32,
    kind: Kind,
    kind_flag: bool,
    vlen: u16,
    size_or_type: u32,
    /// Offset in the blob of the data following the 12-byte record.
    extra: usize,
}

/// Names to values without copying the names: a hash picks a chain of candidates, whose real
/// names are compared on lookup.
#[derive(Debug)]
struct NameIndex<T> {
    heads: HashMap<u64, u32>,
    /// (value, name offset, index of the next entry in the chain + 1 or 0)
    entries: Vec<(T, u32, u32)>,
}

impl<T: Copy> NameIndex<T> {
    fn new() -> Self {
        NameIndex {
            heads: HashMap::new(),
            entries: Vec::new(),
        }
    }

    fn hash(name: &str) -> u64 {
        let mut h = DefaultHasher::new();
        name.hash(&mut h);
        h.finish()
    }

    fn insert(&mut self, name: &str, name_off: u32, value: T) {
        let at = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        let next = self.heads.insert(Self::hash(name), at).map_or(0, |p| p + 1);
        self.entries.push((value, name_off, next));
    }

    /// Values inserted under `name`, most recent first.
    fn get<'a>(&'a self, btf: &'a Btf, name: &'a str) -> impl Iterator<Item = T> + 'a {
        let mut next = self.heads.get(&Self::hash(name)).map(|&i| i as usize);
        std::iter::from_fn(move || {
            while let Some(i) = next {
                let &(value, name_off, n) = self.entries.get(i)?;
                next = n.checked_sub(1).map(|n| n as usize);
                if btf.str_at(name_off) == name {
                    return Some(value);
                }
            }
            None
        })
    }
}

/// A member of a struct or union as declared (offset relative to its own struct).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// Empty for anonymous struct/union members.
    pub name: &'a str,
    pub type_id: TypeId,
    pub bit_offset: u32,
    /// Set for bitfields declared in a `kind_flag` struct.
    pub bitfield_size: Option<u32>,
}

/// Where a (possibly nested) member lies in the outermost struct of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLocation {
    /// Byte offset; for a bitfield, of the byte holding its first bit.
    pub offset: u64,
    /// Offset in bits from the start of the outer struct.
    pub bit_offset: u64,
    /// Width in bits when the member is a bitfield.
    pub bitfield_size: Option<u32>,
    /// Type as declared.
    pub type_id: TypeId,
    /// Type with typedefs, qualifiers and type tags stripped.
    pub resolved: TypeId,
}

/// How an INT type's bits are read (`BTF_INT_ENCODING`): the C base type behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntEncoding {
    pub signed: bool,
    /// Declared as a character type (`char`, `signed char`, `unsigned char`).
    pub char: bool,
    /// `_Bool`.
    pub bool: bool,
}

/// An array type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayInfo {
    pub elem: TypeId,
    pub index: TypeId,
    pub count: u32,
}

/// A variable placed in a DATASEC (for the kernel: a per-CPU variable in `.data..percpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasecVar {
    /// The DATASEC type.
    pub section: TypeId,
    /// The VAR type.
    pub var: TypeId,
    /// The variable's type.
    pub type_id: TypeId,
    /// Offset inside the section; for `.data..percpu` this is the per-CPU offset that
    /// `__per_cpu_offset[cpu]` is added to.
    pub offset: u32,
    pub size: u32,
}

/// A parsed, validated BTF blob with name indexes.
#[derive(Debug)]
pub struct Btf {
    origin: String,
    data: Vec<u8>,
    str_start: usize,
    str_end: usize,
    /// Indexed by type id; entry 0 is `void`.
    recs: Vec<Rec>,
    types_by_name: NameIndex<TypeId>,
    /// Enumerator name → (enum type id, index of the value).
    enumerators: NameIndex<(TypeId, u16)>,
    /// VAR type id → (DATASEC type id, index of its entry).
    var_sections: HashMap<TypeId, (TypeId, u16)>,
}

fn le32(data: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

impl Btf {
    /// Parses and validates `data`; `origin` names where it came from in error messages
    /// (a file, or an address in a memory image).
    pub fn parse(origin: impl Into<String>, data: Vec<u8>) -> BtfResult<Btf> {
        let origin = origin.into();
        let bad = |offset: usize, problem: String| BtfError::Malformed {
            origin: origin.clone(),
            offset: offset as u64,
            problem,
        };
        let word = |off: usize| le32(&data, off).ok_or_else(|| bad(off, "header is truncated".into()));
        let magic = data
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| bad(0, format!("{} bytes are too short for a header", data.len())))?;
        if magic == MAGIC.swap_bytes() {
            return Err(bad(
                0,
                "big-endian BTF is not supported (x86 guests are little-endian)".into(),
            ));
        }
        if magic != MAGIC {
            return Err(bad(0, format!("magic {magic:#06x} is not {MAGIC:#06x}")));
        }
        if data.get(2) != Some(&1) {
            return Err(bad(2, format!("version {:?} is not 1", data.get(2))));
        }
        let hdr_len = word(4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(bad(
                4,
                format!("header length {hdr_len} is outside 24..={}", data.len()),
            ));
        }
        // A longer header from a newer kernel is fine only if the fields we do not know are zero.
        if data[HEADER_LEN..hdr_len].iter().any(|&b| b != 0) {
            return Err(bad(HEADER_LEN, "unknown non-zero header fields".into()));
        }
        let section = |field: usize, what: &str| -> BtfResult<(usize, usize)> {
            let off = word(field)? as usize;
            let len = word(field + 4)? as usize;
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= data.len() => Ok((s, e)),
                _ => Err(bad(
                    field,
                    format!(
                        "{what} section ({len} bytes at +{off:#x}) ends beyond the {}-byte blob",
                        data.len()
                    ),
                )),
            }
        };
        let (type_start, type_end) = section(8, "type")?;
        let (str_start, str_end) = section(16, "string")?;
        if type_start % 4 != 0 {
            return Err(bad(8, "type section is not 4-byte aligned".into()));
        }
        if type_start < str_end && str_start < type_end {
            return Err(bad(8, "type and string sections overlap".into()));
        }
        if str_end == str_start || data.get(str_start) != Some(&0) || data.get(str_end - 1) != Some(&0) {
            return Err(bad(str_start, "string section must start and end with NUL".into()));
        }

        let mut recs = vec![Rec {
            name_off: 0,
            kind: Kind::Void,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut off = type_start;
        while off < type_end {
            let (Some(name_off), Some(info), Some(size_or_type)) = (
                le32(&data[..type_end], off),
                le32(&data[..type_end], off + 4),
                le32(&data[..type_end], off + 8),
            ) else {
                return Err(bad(off, format!("type record {} is truncated", recs.len())));
            };
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .ok_or_else(|| bad(off, format!("type id {} has unknown kind {raw_kind}", recs.len())))?;
            if info & 0x60ff_0000 != 0 {
                return Err(bad(
                    off,
                    format!("type id {} sets reserved info bits ({info:#x})", recs.len()),
                ));
            }
            let vlen = (info & 0xffff) as u16;
            let extra = off + 12;
            let end = (extra as u64) + kind.extra_len(u32::from(vlen));
            if end > type_end as u64 {
                return Err(bad(
                    off,
                    format!(
                        "type id {} ({kind:?}, vlen {vlen}) runs past the type section",
                        recs.len()
                    ),
                ));
            }
            recs.push(Rec {
                name_off,
                kind,
                kind_flag: info >> 31 != 0,
                vlen,
                size_or_type,
                extra,
            });
            off = end as usize;
        }
        if u32::try_from(recs.len()).is_err() {
            return Err(bad(type_start, "more than 2^32 types".into()));
        }

        let mut btf = Btf {
            origin,
            data,
            str_start,
            str_end,
            recs,
            types_by_name: NameIndex::new(),
            enumerators: NameIndex::new(),
            var_sections: HashMap::new(),
        };
        btf.validate_and_index()?;
        Ok(btf)
    }

    /// Checks every name and type reference, then builds the name indexes.
    fn validate_and_index(&mut self) -> BtfResult<()> {
        let count = self.recs.len() as u64;
        let mut by_name = NameIndex::new();
        let mut enumerators = NameIndex::new();
        let mut var_sections = HashMap::new();
        for (id, rec) in self.recs.iter().enumerate().skip(1) {
            let id = id as TypeId;
            let at = rec.extra - 12;
            let name = self.checked_str(rec.name_off, at)?;
            if !name.is_empty() {
                by_name.insert(name, rec.name_off, id);
            }
            let check_ref = |t: u32, at: usize| {
                if u64::from(t) < count {
                    Ok(())
                } else {
                    Err(self.malformed(
                        at,
                        format!("type id {id} refers to type id {t}, beyond the last ({count})"),
                    ))
                }
            };
            if rec.kind.refers() {
                check_ref(rec.size_or_type, at + 8)?;
            }
            let word = |i: usize| self.word(rec.extra + 4 * i);
            match rec.kind {
                Kind::Array => {
                    check_ref(word(0)?, rec.extra)?;
                    check_ref(word(1)?, rec.extra + 4)?;
                }
                Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum | Kind::Enum64 | Kind::FuncProto => {
                    let stride = match rec.kind {
                        Kind::Enum | Kind::FuncProto => 2,
                        _ => 3,
                    };
                    for i in 0..usize::from(rec.vlen) {
                        let base = stride * i;
                        let at = rec.extra + 4 * base;
                        match rec.kind {
                            Kind::Struct | Kind::Union | Kind::FuncProto => {
                                self.checked_str(word(base)?, at)?;
                                check_ref(word(base + 1)?, at + 4)?;
                            }
                            Kind::Datasec => {
                                let var = word(base)?;
                                check_ref(var, at)?;
                                var_sections.insert(var, (id, i as u16));
                            }
                            _ => {
                                let name_off = word(base)?;
                                let name = self.checked_str(name_off, at)?;
                                enumerators.insert(name, name_off, (id, i as u16));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        self.types_by_name = by_name;
        self.enumerators = enumerators;
        self.var_sections = var_sections;
        Ok(())
    }

    fn malformed(&self, offset: usize, problem: String) -> BtfError {
        BtfError::Malformed {
            origin: self.origin.clone(),
            offset: offset as u64,
            problem,
        }
    }

    fn word(&self, off: usize) -> BtfResult<u32> {
        le32(&self.data, off).ok_or_else(|| self.malformed(off, "record runs past the blob".into()))
    }

    /// The name at `name_off`, checked to lie in the string section and to be UTF-8.
    fn checked_str(&self, name_off: u32, at: usize) -> BtfResult<&str> {
        let start = self
            .str_start
            .checked_add(name_off as usize)
            .filter(|&s| s < self.str_end);
        let bytes = start
            .and_then(|s| {
                let rest = &self.data[s..self.str_end];
                rest.get(..memchr::memchr(0, rest)?)
            })
            .ok_or_else(|| self.malformed(at, format!("name offset {name_off:#x} is outside the string section")))?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed(at, format!("name at {name_off:#x} is not UTF-8")))
    }

    /// A name already validated by [`Self::checked_str`] at parse time.
    fn str_at(&self, name_off: u32) -> &str {
        self.checked_str(name_off, 0).unwrap_or("")
    }

    fn rec(&self, id: TypeId) -> BtfResult<Rec> {
        self.recs.get(id as usize).copied().ok_or_else(|| BtfError::NotFound {
            origin: self.origin.clone(),
            what: "type id",
            name: id.to_string(),
        })
    }

    fn type_error(&self, id: TypeId, problem: impl Into<String>) -> BtfError {
        let (name, kind) = match self.rec(id) {
            Ok(r) => (self.str_at(r.name_off).to_string(), r.kind),
            Err(_) => (String::new(), Kind::Void),
        };
        BtfError::Type {
            origin: self.origin.clone(),
            id,
            name,
            kind,
            problem: problem.into(),
        }
    }

    fn not_found(&self, what: &'static str, name: &str) -> BtfError {
        BtfError::NotFound {
            origin: self.origin.clone(),
            what,
            name: name.to_string(),
        }
    }

    /// Where the blob came from, as given to [`Self::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The raw blob.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of type ids, including 0 (`void`).
    pub fn type_count(&self) -> u32 {
        self.recs.len() as u32
    }

    /// Kind of type `id`.
    pub fn kind(&self, id: TypeId) -> Option<Kind> {
        self.recs.get(id as usize).map(|r| r.kind)
    }

    /// Name of type `id` (empty when anonymous).
    pub fn name(&self, id: TypeId) -> Option<&str> {
        self.recs.get(id as usize).map(|r| self.str_at(r.name_off))
    }

    /// Types named `name`, in ascending id order.
    pub fn find_all(&self, name: &str) -> Vec<TypeId> {
        let mut ids: Vec<TypeId> = self.types_by_name.get(self, name).collect();
        ids.sort_unstable();
        ids
    }

    /// The first type named `name` of kind `kind`.
    pub fn find(&self, name: &str, kind: Kind) -> Option<TypeId> {
        self.types_by_name
            .get(self, name)
            .filter(|&id| self.kind(id) == Some(kind))
            .min()
    }

    /// The first struct or union with tag `name` (forward declarations do not count).
    pub fn find_struct(&self, name: &str) -> Option<TypeId> {
        self.types_by_name
            .get(self, name)
            .filter(|&id| matches!(self.kind(id), Some(Kind::Struct | Kind::Union)))
            .min()
    }

    /// The struct/union a C expression `offsetof(name, …)` would mean: a struct/union tag,
    /// else a typedef of one (e.g. `atomic_long_t`).
    pub fn find_container(&self, name: &str) -> BtfResult<TypeId> {
        if let Some(id) = self.find_struct(name) {
            return Ok(id);
        }
        let mut typedefs: Vec<TypeId> = self
            .types_by_name
            .get(self, name)
            .filter(|&id| self.kind(id) == Some(Kind::Typedef))
            .collect();
        typedefs.sort_unstable();
        for id in typedefs {
            let r = self.resolve(id)?;
            if matches!(self.kind(r), Some(Kind::Struct | Kind::Union)) {
                return Ok(r);
            }
        }
        Err(self.not_found("struct, union or typedef of one", name))
    }

    /// Strips typedefs, `const`/`volatile`/`restrict` and type tags.
    pub fn resolve(&self, id: TypeId) -> BtfResult<TypeId> {
        let mut cur = id;
        for _ in 0..=MAX_DEPTH {
            let r = self.rec(cur)?;
            match r.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => cur = r.size_or_type,
                _ => return Ok(cur),
            }
        }
        Err(self.type_error(id, format!("typedef/qualifier chain longer than {MAX_DEPTH} (cyclic?)")))
    }

    /// `sizeof` of type `id` in bytes.
    pub fn size_of(&self, id: TypeId) -> BtfResult<u64> {
        let mut cur = id;
        let mut mult = 1u64;
        for _ in 0..=2 * MAX_DEPTH {
            let r = self.rec(cur)?;
            let size = match r.kind {
                Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float | Kind::Datasec => {
                    u64::from(r.size_or_type)
                }
                Kind::Ptr => POINTER_SIZE,
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag | Kind::Var => {
                    cur = r.size_or_type;
                    continue;
                }
                Kind::Array => {
                    let a = self.array_of(cur, r)?;
                    mult = mult
                        .checked_mul(u64::from(a.count))
                        .ok_or_else(|| self.type_error(id, "size overflows 64 bits"))?;
                    cur = a.elem;
                    continue;
                }
                Kind::Void | Kind::Fwd | Kind::Func | Kind::FuncProto | Kind::DeclTag => {
                    return Err(self.type_error(cur, "has no size"));
                }
            };
            return mult
                .checked_mul(size)
                .ok_or_else(|| self.type_error(id, "size overflows 64 bits"));
        }
        Err(self.type_error(id, format!("type chain longer than {} (cyclic?)", 2 * MAX_DEPTH)))
    }

    fn array_of(&self, id: TypeId, r: Rec) -> BtfResult<ArrayInfo> {
        if r.kind != Kind::Array {
            return Err(self.type_error(id, "is not an array"));
        }
        Ok(ArrayInfo {
            elem: self.word(r.extra)?,
            index: self.word(r.extra + 4)?,
            count: self.word(r.extra + 8)?,
        })
    }

    /// Element type and count of an array type (after stripping typedefs and qualifiers).
    pub fn array(&self, id: TypeId) -> BtfResult<ArrayInfo> {
        let id = self.resolve(id)?;
        self.array_of(id, self.rec(id)?)
    }

    /// Target of a pointer type (after stripping typedefs and qualifiers on the pointer).
    pub fn pointee(&self, id: TypeId) -> BtfResult<TypeId> {
        let id = self.resolve(id)?;
        let r = self.rec(id)?;
        if r.kind != Kind::Ptr {
            return Err(self.type_error(id, "is not a pointer"));
        }
        Ok(r.size_or_type)
    }

    /// The type a PTR, TYPEDEF, qualifier, TYPE_TAG, FUNC, VAR or DECL_TAG `id` refers to,
    /// one step (nothing stripped); `None` for other kinds.
    pub fn target(&self, id: TypeId) -> Option<TypeId> {
        let r = self.recs.get(id as usize)?;
        // A FUNC_PROTO's type is its return type, not something it stands for.
        (r.kind.refers() && r.kind != Kind::FuncProto).then_some(r.size_or_type)
    }

    /// Members of struct/union `id` (not resolved through typedefs) in declaration order.
    pub fn members(&self, id: TypeId) -> BtfResult<impl Iterator<Item = Member<'_>> + '_> {
        let r = self.rec(id)?;
        if !matches!(r.kind, Kind::Struct | Kind::Union) {
            return Err(self.type_error(id, "is not a struct or union"));
        }
        Ok((0..usize::from(r.vlen)).filter_map(move |i| {
            let at = r.extra + 12 * i;
            let (name_off, type_id, off) = (
                le32(&self.data, at)?,
                le32(&self.data, at + 4)?,
                le32(&self.data, at + 8)?,
            );
            let (bit_offset, bitfield_size) = match (r.kind_flag, off >> 24) {
                (true, size) if size != 0 => (off & 0x00ff_ffff, Some(size)),
                _ => (off, None),
            };
            Some(Member {
                name: self.str_at(name_off),
                type_id,
                bit_offset,
                bitfield_size,
            })
        }))
    }

    /// Locates `path` (`"a.b.c"`) in the struct/union (or typedef of one) named `container`,
    /// looking through anonymous struct/union members as C does.
    pub fn member(&self, container: &str, path: &str) -> BtfResult<MemberLocation> {
        self.member_of(self.find_container(container)?, path)
    }

    /// [`Self::member`] for a container given by type id.
    pub fn member_of(&self, id: TypeId, path: &str) -> BtfResult<MemberLocation> {
        let mut cont = self.resolve(id)?;
        let mut bits = 0u64;
        let mut found: Option<(Member<'_>, TypeId)> = None;
        for name in path.split('.') {
            if let Some((m, resolved)) = found {
                if m.bitfield_size.is_some() {
                    return Err(self.type_error(cont, format!("member `{}` is a bitfield (path `{path}`)", m.name)));
                }
                cont = resolved;
            }
            if name.is_empty() {
                return Err(self.type_error(cont, format!("empty component in member path `{path}`")));
            }
            let mut budget = MEMBER_BUDGET;
            let (off, m) = self
                .find_member(cont, name, 0, &mut budget)?
                .ok_or_else(|| self.type_error(cont, format!("has no member `{name}` (path `{path}`)")))?;
            bits += off;
            found = Some((m, self.resolve(m.type_id)?));
        }
        let (m, resolved) = found.ok_or_else(|| self.type_error(cont, "empty member path"))?;
        let mut bitfield_size = m.bitfield_size;
        // Without kind_flag, a bitfield is an INT narrower than its storage, possibly shifted.
        let r = self.rec(resolved)?;
        if bitfield_size.is_none() && r.kind == Kind::Int {
            let enc = self.word(r.extra)?;
            let (int_bits, int_off) = (enc & 0xff, (enc >> 16) & 0xff);
            if int_off != 0 || u64::from(int_bits) != 8 * u64::from(r.size_or_type) {
                bits += u64::from(int_off);
                bitfield_size = Some(int_bits);
            }
        }
        Ok(MemberLocation {
            offset: bits / 8,
            bit_offset: bits,
            bitfield_size,
            type_id: m.type_id,
            resolved,
        })
    }

    /// Depth-first search of `name` in `cont` and its anonymous members, in declaration
    /// order; returns the bit offset relative to `cont`.
    fn find_member(
        &self,
        cont: TypeId,
        name: &str,
        depth: usize,
        budget: &mut usize,
    ) -> BtfResult<Option<(u64, Member<'_>)>> {
        if depth > MAX_DEPTH {
            return Err(self.type_error(
                cont,
                format!("anonymous members nest deeper than {MAX_DEPTH} (cyclic?)"),
            ));
        }
        for m in self.members(cont)? {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                self.type_error(
                    cont,
                    format!("member search for `{name}` exceeds {MEMBER_BUDGET} steps"),
                )
            })?;
            if m.name == name {
                return Ok(Some((u64::from(m.bit_offset), m)));
            }
            if m.name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                if matches!(self.kind(inner), Some(Kind::Struct | Kind::Union))
                    && let Some((off, found)) = self.find_member(inner, name, depth + 1, budget)?
                {
                    return Ok(Some((u64::from(m.bit_offset) + off, found)));
                }
            }
        }
        Ok(None)
    }

    /// Value of enumerator `name` (ENUM or ENUM64) and the enum type holding it; the first
    /// one by type id when several enums define it.
    pub fn enum_value(&self, name: &str) -> BtfResult<(TypeId, i128)> {
        let (id, i) = self
            .enumerators
            .get(self, name)
            .min()
            .ok_or_else(|| self.not_found("enumerator", name))?;
        Ok((id, self.enumerator_value(id, i)?))
    }

    /// Value of enumerator `name` of the enum named `enum_name`.
    pub fn enum_value_in(&self, enum_name: &str, name: &str) -> BtfResult<i128> {
        let mut enums: Vec<(TypeId, u16)> = self
            .enumerators
            .get(self, name)
            .filter(|&(id, _)| self.name(id) == Some(enum_name))
            .collect();
        enums.sort_unstable();
        let &(id, i) = enums
            .first()
            .ok_or_else(|| self.not_found("enumerator", &format!("{enum_name}::{name}")))?;
        self.enumerator_value(id, i)
    }

    /// Enumerators of ENUM or ENUM64 type `id` in declaration order, with their values.
    pub fn enumerators(&self, id: TypeId) -> BtfResult<impl Iterator<Item = (&str, i128)> + '_> {
        let r = self.rec(id)?;
        let stride = match r.kind {
            Kind::Enum => 8,
            Kind::Enum64 => 12,
            _ => return Err(self.type_error(id, "is not an enum")),
        };
        // Records were bounds-checked at parse time, so the reads below cannot fail.
        Ok((0..r.vlen).filter_map(move |i| {
            let name_off = le32(&self.data, r.extra + stride * usize::from(i))?;
            Some((self.str_at(name_off), self.enumerator_value(id, i).ok()?))
        }))
    }

    /// Encoding of INT type `id` (not resolved through typedefs).
    pub fn int_encoding(&self, id: TypeId) -> BtfResult<IntEncoding> {
        let r = self.rec(id)?;
        if r.kind != Kind::Int {
            return Err(self.type_error(id, "is not an integer type"));
        }
        let enc = self.word(r.extra)? >> 24;
        Ok(IntEncoding {
            signed: enc & 1 != 0,
            char: enc & 2 != 0,
            bool: enc & 4 != 0,
        })
    }

    fn enumerator_value(&self, id: TypeId, i: u16) -> BtfResult<i128> {
        let r = self.rec(id)?;
        let signed = r.kind_flag;
        Ok(match r.kind {
            Kind::Enum => {
                let v = self.word(r.extra + 8 * usize::from(i) + 4)?;
                if signed { i128::from(v as i32) } else { i128::from(v) }
            }
            Kind::Enum64 => {
                let at = r.extra + 12 * usize::from(i);
                let v = u64::from(self.word(at + 4)?) | u64::from(self.word(at + 8)?) << 32;
                if signed { i128::from(v as i64) } else { i128::from(v) }
            }
            _ => return Err(self.type_error(id, "is not an enum")),
        })
    }

    /// Variable `name` in DATASEC `section` (e.g. `.data..percpu`). Kernel BTF records only
    /// per-CPU variables this way.
    pub fn datasec_var(&self, section: &str, name: &str) -> BtfResult<DatasecVar> {
        let mut vars: Vec<TypeId> = self
            .types_by_name
            .get(self, name)
            .filter(|&id| self.kind(id) == Some(Kind::Var))
            .collect();
        vars.sort_unstable();
        for var in vars {
            let Some(&(sec, i)) = self.var_sections.get(&var) else {
                continue;
            };
            if self.name(sec) != Some(section) {
                continue;
            }
            let at = self.rec(sec)?.extra + 12 * usize::from(i);
            return Ok(DatasecVar {
                section: sec,
                var,
                type_id: self.rec(var)?.size_or_type,
                offset: self.word(at + 4)?,
                size: self.word(at + 8)?,
            });
        }
        Err(self.not_found("variable", &format!("{section}:{name}")))
    }
}

/// Layouts for the kernel model; every failed lookup reads as "not known".
impl super::TypeInfo for Btf {
    fn member_offset(&self, ty: &str, member: &str) -> Option<u64> {
        self.member(ty, member).ok().map(|m| m.offset)
    }

    fn struct_size(&self, ty: &str) -> Option<u64> {
        self.size_of(self.find_container(ty).ok()?).ok()
    }

    fn member_size(&self, ty: &str, member: &str) -> Option<u64> {
        self.size_of(self.member(ty, member).ok()?.type_id).ok()
    }

    fn enum_value(&self, ty: &str, name: &str) -> Option<i128> {
        if ty.is_empty() {
            return self.enum_value(name).ok().map(|(_, v)| v);
        }
        self.enum_value_in(ty, name).ok()
    }
}

/// The kernel's BTF found in a memory image.
#[derive(Debug)]
pub struct CarvedBtf {
    /// Guest-physical address of the blob's first byte.
    pub paddr: u64,
    pub btf: Btf,
}

/// Searches guest-physical memory for the running kernel's `.BTF` and returns the first blob
/// (lowest address) that parses completely and defines `task_struct`; `None` if no page holds one.
///
/// The kernel image is physically contiguous, so its `.BTF` is one run of pages. The section
/// has alignment 1 in vmlinux (on 6.1 it follows `.notes` at a 4-byte boundary), so every
/// byte offset is searched for the header start `9F EB 01`. Candidates are cheaply vetted
/// first (header as the kernel's pahole writes it: 24-byte header, types first, strings right
/// after, NUL at both ends of the strings) before the whole blob is read and parsed. Module
/// (split) BTF fails to parse on its own and is skipped.
pub fn find_kernel_btf(mem: &dyn PhysMemory) -> Option<CarvedBtf> {
    const PREFIX: [u8; 3] = [0x9f, 0xeb, 0x01];
    let finder = memchr::memmem::Finder::new(&PREFIX);
    let mut candidates = 0;
    for range in mem.present_ranges() {
        for pfn in range {
            let Some(page) = mem.page(pfn) else { continue };
            let base = pfn << PAGE_SHIFT;
            let hits = finder.find_iter(page).map(|i| i as u64);
            // Headers starting in the last two bytes straddle into the next page.
            let straddling = [PAGE_SIZE - 2, PAGE_SIZE - 1]
                .into_iter()
                .filter(|&i| page.get(i..).is_some_and(|tail| PREFIX.starts_with(tail)))
                .map(|i| i as u64);
            for off in hits.chain(straddling) {
                match try_candidate(mem, base + off) {
                    Candidate::Found(found) => return Some(*found),
                    Candidate::Rejected => {
                        candidates += 1;
                        if candidates >= MAX_CARVE_CANDIDATES {
                            return None;
                        }
                    }
                    Candidate::Implausible => {}
                }
            }
        }
    }
    None
}

enum Candidate {
    Found(Box<CarvedBtf>),
    /// The header's shape is wrong: cheap to see, not counted.
    Implausible,
    /// Read and parsed, and not the kernel's.
    Rejected,
}

fn try_candidate(mem: &dyn PhysMemory, paddr: u64) -> Candidate {
    let mut hdr = [0u8; HEADER_LEN];
    if mem.read_phys(paddr, &mut hdr).is_err() {
        return Candidate::Implausible;
    }
    let field = |i: usize| le32(&hdr, i).unwrap_or(0);
    let (hdr_len, type_off, type_len, str_off, str_len) = (field(4), field(8), field(12), field(16), field(20));
    let plausible = hdr[..4] == [0x9f, 0xeb, 0x01, 0x00]
        && hdr_len as usize == HEADER_LEN
        && type_off == 0
        && type_len > 0
        && type_len % 4 == 0
        && str_off == type_len
        && str_len > 0;
    let total = HEADER_LEN as u64 + u64::from(type_len) + u64::from(str_len);
    if !plausible || total > MAX_CARVED_LEN {
        return Candidate::Implausible;
    }
    let mut edge = [0u8; 1];
    let str_at = paddr + HEADER_LEN as u64 + u64::from(str_off);
    for at in [str_at, paddr + total - 1] {
        if mem.read_phys(at, &mut edge).is_err() || edge[0] != 0 {
            return Candidate::Implausible;
        }
    }
    let mut blob = vec![0u8; total as usize];
    if mem.read_phys(paddr, &mut blob).is_err() {
        return Candidate::Rejected;
    }
    let origin = format!("{}: guest-physical {paddr:#x}", mem.path().display());
    match Btf::parse(origin, blob) {
        Ok(btf) if btf.find_struct("task_struct").is_some() => Candidate::Found(Box::new(CarvedBtf { paddr, btf })),
        _ => Candidate::Rejected,
    }
}
