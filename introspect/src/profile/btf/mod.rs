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

mod carve;
mod parse;
mod query;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

pub use carve::{CarvedBtf, find_kernel_btf};

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
