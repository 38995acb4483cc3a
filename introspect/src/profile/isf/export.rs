//! Generating an ISF from BTF and a symbol table, with dwarf2json's conventions.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{MAX_TYPE_DEPTH, POINTER_SIZE, base64_encode};
use crate::profile::btf::{Btf, Kind, TypeId};
use crate::profile::kallsyms::Symbols;

/// ISF format written by [`isf_from_btf_and_symbols`]: the one current dwarf2json writes.
const FORMAT: &str = "6.2.0";

/// Writes a Volatility 3 ISF (format 6.2.0, as dwarf2json writes it) describing the kernel
/// whose types are `btf` and whose link-time symbols are `symbols` (a System.map), with
/// `banner` (the text of `/proc/version`) stored as `linux_banner`'s constant data so that
/// Volatility's banner scan — and [`Isf::banner`](super::Isf::banner) — can identify the kernel. The banner is
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
            json!({"address": s.address, "type": g.symbol_type(s.name, &base_types)}),
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
/// plugins read as typed objects (`object_from_symbol`), as (symbol, C type): `struct NAME` or
/// a base type's BTF name, then `*`s, then an optional `[COUNT]`. BTF describes only per-CPU
/// variables, so the types of other globals come from here; one whose struct or base type
/// the BTF lacks stays `void`.
const KNOWN_GLOBALS: &[(&str, &str)] = &[
    ("init_task", "struct task_struct"),
    ("init_mm", "struct mm_struct"),
    ("init_files", "struct files_struct"),
    ("init_fs", "struct fs_struct"),
    ("init_cred", "struct cred"),
    ("init_nsproxy", "struct nsproxy"),
    ("init_uts_ns", "struct uts_namespace"),
    ("init_pid_ns", "struct pid_namespace"),
    ("init_net", "struct net"),
    ("modules", "struct list_head"),
    ("super_blocks", "struct list_head"),
    ("net_namespace_list", "struct list_head"),
    ("tty_drivers", "struct list_head"),
    ("bpf_kallsyms", "struct list_head"),
    ("file_systems", "struct file_system_type *"),
    ("prb", "struct printk_ringbuffer *"),
    ("module_kset", "struct kset *"),
    ("mod_tree", "struct mod_tree_root"),
    ("keyboard_notifier_list", "struct atomic_notifier_head"),
    ("prog_idr", "struct idr"),
    ("socket_file_ops", "struct file_operations"),
    ("sockfs_dentry_operations", "struct dentry_operations"),
    ("ftrace_ops_list", "struct ftrace_ops *"),
    ("ftrace_list_end", "struct ftrace_ops"),
    ("idt_table", "struct gate_struct [256]"),
    ("registered_fb", "struct fb_info *[32]"),
    ("num_registered_fb", "int"),
    ("cap_last_cap", "int"),
    ("mem_map", "struct page *"),
    ("vmemmap_base", "long unsigned int"),
    ("page_offset_base", "long unsigned int"),
    ("jiffies", "long unsigned int"),
    ("log_buf", "char *"),
    ("log_buf_len", "unsigned int"),
];

struct Generator<'a> {
    btf: &'a Btf,
}

impl Generator<'_> {
    /// A symbol's type: a per-CPU variable's from the BTF, a well-known global's, else void.
    fn symbol_type(&self, name: &str, base_types: &BTreeMap<String, Value>) -> Value {
        if let Ok(var) = self.btf.datasec_var(".data..percpu", name)
            && let Some(t) = self.descriptor(var.type_id, 0)
        {
            return t;
        }
        KNOWN_GLOBALS
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, c_type)| self.c_type(c_type, base_types))
            .unwrap_or_else(|| json!({"kind": "base", "name": "void"}))
    }

    /// The descriptor of a [`KNOWN_GLOBALS`] type, if the BTF has what it names.
    fn c_type(&self, c_type: &str, base_types: &BTreeMap<String, Value>) -> Option<Value> {
        let (c_type, count) = match c_type.split_once('[') {
            Some((t, n)) => (t, Some(n.trim_end_matches(']').parse::<u64>().ok()?)),
            None => (c_type, None),
        };
        let base = c_type.trim_end_matches(['*', ' ']);
        let mut t = match base.strip_prefix("struct ") {
            Some(s) => {
                self.btf.find_struct(s)?;
                json!({"kind": "struct", "name": s})
            }
            None => {
                base_types.get(base)?;
                json!({"kind": "base", "name": base})
            }
        };
        for _ in 0..c_type.matches('*').count() {
            t = json!({"kind": "pointer", "subtype": t});
        }
        Some(match count {
            Some(count) => json!({"kind": "array", "count": count, "subtype": t}),
            None => t,
        })
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
