//! Lookups on a validated [`Btf`]: types by name, sizes, members (through anonymous members),
//! enumerators and per-CPU variables, and the [`TypeInfo`](crate::profile::TypeInfo) the
//! kernel model reads.

use super::{
    ArrayInfo, Btf, BtfError, BtfResult, DatasecVar, IntEncoding, Kind, MAX_DEPTH, MEMBER_BUDGET, Member,
    MemberLocation, POINTER_SIZE, Rec, TypeId, le32,
};

impl Btf {
    /// A name already validated by [`Self::checked_str`] at parse time.
    pub(super) fn str_at(&self, name_off: u32) -> &str {
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
impl crate::profile::TypeInfo for Btf {
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
