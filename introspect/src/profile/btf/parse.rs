//! [`Btf::parse`]: the header, the type section record by record, the string section, and the
//! validation of every name and reference before the name indexes are built.

use std::collections::HashMap;

use super::{Btf, BtfError, BtfResult, HEADER_LEN, Kind, MAGIC, NameIndex, Rec, TypeId, le32};

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

    pub(super) fn word(&self, off: usize) -> BtfResult<u32> {
        le32(&self.data, off).ok_or_else(|| self.malformed(off, "record runs past the blob".into()))
    }

    /// The name at `name_off`, checked to lie in the string section and to be UTF-8.
    pub(super) fn checked_str(&self, name_off: u32, at: usize) -> BtfResult<&str> {
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
}
