//! rpm-md repository metadata, as dnf and yum read it: `repodata/repomd.xml` (where the other
//! files are, with their checksums), `primary.xml` (every package of the repository) and
//! `updateinfo.xml` (advisories), and the update candidates `dnf check-update` lists.
//!
//! `primary.xml` runs to hundreds of megabytes: it is pulled through quick-xml one event at a
//! time and only name, arch and EVR are kept. Every input is bounded in total size, element
//! depth, single event size, attribute count and entry count.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::Serialize;

use crate::rpmdb::RpmPackage;
use crate::rpmversion::rpmvercmp;

/// repomd.xml lists a handful of files; far larger is not repository metadata.
pub const MAX_REPOMD_BYTES: u64 = 16 << 20;
/// More packages than any repository (Fedora's everything: ~80,000) holds.
pub const MAX_PACKAGES: usize = 2_000_000;
pub const MAX_ADVISORIES: usize = 1_000_000;
const MAX_DATA: usize = 1_000;
const MAX_DEPTH: usize = 64;
const MAX_ATTRIBUTES: usize = 64;
/// One tag or text run; a package description is a few kilobytes.
const MAX_EVENT: usize = 1 << 20;
/// A kept field (name, arch, version, checksum, href).
const MAX_FIELD: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: byte {offset}: {what}")]
pub struct RpmMdError {
    pub file: String,
    pub offset: u64,
    pub what: String,
}

/// One `<data>` entry of repomd.xml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepomdData {
    /// `primary`, `updateinfo`, `filelists`, …
    pub kind: String,
    /// Relative to the repository's base URL (`repodata/<hash>-primary.xml.gz`).
    pub href: String,
    /// (algorithm, lowercase hex digest) of the file as stored (compressed).
    pub checksum: Option<(String, String)>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repomd {
    pub data: Vec<RepomdData>,
}

impl Repomd {
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, RpmMdError> {
        let mut xml = Xml::new(bytes, file, MAX_REPOMD_BYTES);
        let mut out = Self::default();
        let mut field: Option<&'static str> = None;
        let mut text = String::new();
        while let Some(item) = xml.next()? {
            match item {
                Item::Open { level: 1, name, .. } if name != "repomd" => {
                    return Err(xml.error(format!("root element <{name}>, not <repomd>: not a repomd.xml")));
                }
                Item::Open { level: 2, name, attrs } if name == "data" => {
                    if out.data.len() >= MAX_DATA {
                        return Err(xml.error(format!("more than {MAX_DATA} <data> entries")));
                    }
                    out.data.push(RepomdData {
                        kind: xml.attr(&attrs, "type")?.to_owned(),
                        ..RepomdData::default()
                    });
                }
                Item::Open { level: 3, name, attrs } => {
                    let Some(data) = out.data.last_mut() else {
                        continue;
                    };
                    match name.as_str() {
                        "location" => data.href = xml.attr(&attrs, "href")?.to_owned(),
                        "checksum" => {
                            data.checksum = Some((xml.attr(&attrs, "type")?.to_ascii_lowercase(), String::new()));
                            field = Some("checksum");
                        }
                        "size" => field = Some("size"),
                        _ => {}
                    }
                    text.clear();
                }
                Item::Text(t) if field.is_some() => push_bounded(&mut text, &t, &xml)?,
                Item::Close { level: 3 } => {
                    let Some(data) = out.data.last_mut() else {
                        continue;
                    };
                    match field.take() {
                        Some("checksum") => {
                            if let Some((_, hex)) = &mut data.checksum {
                                *hex = text.trim().to_ascii_lowercase();
                            }
                        }
                        Some(_) => {
                            data.size = Some(
                                text.trim()
                                    .parse()
                                    .map_err(|_| xml.error(format!("<size> {:?} is not a number", text.trim())))?,
                            );
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
        if let Some(d) = out.data.iter().find(|d| d.href.is_empty()) {
            return Err(xml.error(format!("<data type=\"{}\"> without a <location href>", d.kind)));
        }
        Ok(out)
    }

    /// The entry of one kind (`primary`, `updateinfo`).
    pub fn get(&self, kind: &str) -> Option<&RepomdData> {
        self.data.iter().find(|d| d.kind == kind)
    }
}

/// A package a repository offers (from primary.xml): what update selection needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Available {
    pub name: String,
    pub arch: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
}

/// The packages of a `primary.xml` (decompressed), streamed from `reader`; at most `limit`
/// bytes are read.
pub fn parse_primary<R: BufRead>(reader: R, file: &str, limit: u64) -> Result<Vec<Available>, RpmMdError> {
    let mut xml = Xml::new(reader, file, limit);
    let mut out = Vec::new();
    // Inside a <package>: its name, arch and EVR so far; `field`: whether the current text is
    // the name (true) or the arch (false).
    type Partial = (Option<String>, Option<String>, Option<(u32, String, String)>);
    let mut current: Option<Partial> = None;
    let mut field: Option<bool> = None;
    let mut text = String::new();
    while let Some(item) = xml.next()? {
        match item {
            Item::Open { level: 1, name, .. } if name != "metadata" => {
                return Err(xml.error(format!("root element <{name}>, not <metadata>: not a primary.xml")));
            }
            Item::Open { level: 2, name, .. } if name == "package" => current = Some((None, None, None)),
            Item::Open { level: 3, name, attrs } => {
                let Some(pkg) = current.as_mut() else {
                    continue;
                };
                text.clear();
                match name.as_str() {
                    "name" => field = Some(true),
                    "arch" => field = Some(false),
                    "version" => pkg.2 = Some(evr_attrs(&xml, &attrs, "epoch", "ver", "rel")?),
                    _ => {}
                }
            }
            Item::Text(t) if field.is_some() => push_bounded(&mut text, &t, &xml)?,
            Item::Close { level: 3 } => match (field.take(), current.as_mut()) {
                (Some(true), Some(pkg)) => pkg.0 = Some(text.trim().to_owned()),
                (Some(false), Some(pkg)) => pkg.1 = Some(text.trim().to_owned()),
                _ => {}
            },
            Item::Close { level: 2 } => {
                let Some((name, arch, evr)) = current.take() else {
                    continue;
                };
                let (Some(name), Some(arch), Some((epoch, version, release))) = (name, arch, evr) else {
                    return Err(xml.error("a <package> without <name>, <arch> or <version>"));
                };
                if out.len() >= MAX_PACKAGES {
                    return Err(xml.error(format!("more than {MAX_PACKAGES} packages")));
                }
                out.push(Available {
                    name,
                    arch,
                    epoch,
                    version,
                    release,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One advisory of updateinfo.xml, with the package versions that carry its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    /// `security`, `bugfix`, `enhancement`, `newpackage`.
    pub kind: String,
    pub packages: Vec<Available>,
}

/// The advisories of an `updateinfo.xml` (decompressed), streamed from `reader`.
pub fn parse_updateinfo<R: BufRead>(reader: R, file: &str, limit: u64) -> Result<Vec<Advisory>, RpmMdError> {
    let mut xml = Xml::new(reader, file, limit);
    let mut out: Vec<Advisory> = Vec::new();
    let mut in_update = false;
    let mut in_id = false;
    let mut text = String::new();
    let mut packages = 0usize;
    while let Some(item) = xml.next()? {
        match item {
            Item::Open { level: 1, name, .. } if name != "updates" => {
                return Err(xml.error(format!("root element <{name}>, not <updates>: not an updateinfo.xml")));
            }
            Item::Open { level: 2, name, attrs } if name == "update" => {
                if out.len() >= MAX_ADVISORIES {
                    return Err(xml.error(format!("more than {MAX_ADVISORIES} advisories")));
                }
                out.push(Advisory {
                    id: String::new(),
                    kind: xml.attr(&attrs, "type")?.to_owned(),
                    packages: Vec::new(),
                });
                in_update = true;
            }
            Item::Open { level: 3, name, .. } if in_update && name == "id" => {
                in_id = true;
                text.clear();
            }
            Item::Text(t) if in_id => push_bounded(&mut text, &t, &xml)?,
            Item::Close { level: 3 } if in_id => {
                in_id = false;
                if let Some(a) = out.last_mut() {
                    a.id = text.trim().to_owned();
                }
            }
            Item::Open { name, attrs, .. } if in_update && name == "package" => {
                packages += 1;
                if packages > MAX_PACKAGES {
                    return Err(xml.error(format!("more than {MAX_PACKAGES} advisory packages")));
                }
                let (epoch, version, release) = evr_attrs(&xml, &attrs, "epoch", "version", "release")?;
                let pkg = Available {
                    name: xml.attr(&attrs, "name")?.to_owned(),
                    arch: xml.attr(&attrs, "arch")?.to_owned(),
                    epoch,
                    version,
                    release,
                };
                if let Some(a) = out.last_mut() {
                    a.packages.push(pkg);
                }
            }
            Item::Close { level: 2 } => in_update = false,
            _ => {}
        }
    }
    Ok(out)
}

/// One enabled repository's metadata, as update selection sees it.
pub struct RepoIndex<'a> {
    pub id: &'a str,
    /// The repository's `name=`, for the approximate security classification.
    pub name: &'a str,
    pub packages: &'a [Available],
    /// `None` when the repository publishes no updateinfo.
    pub advisories: Option<&'a [Advisory]>,
}

/// An installed package with a newer version available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpmUpgrade {
    pub name: String,
    /// The candidate's arch (as `dnf check-update` prints `name.arch`).
    pub arch: String,
    /// `[epoch:]version-release`, the epoch shown when not 0 (as dnf prints it).
    pub installed: String,
    pub candidate: String,
    /// The repository ids offering the candidate.
    pub repos: Vec<String>,
    pub security: bool,
    /// The ids of the `type="security"` advisories (updateinfo) this update fixes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
}

/// The arches a machine of `basearch` installs (dnf's arch compatibility, common arches).
fn compatible_arches(basearch: &str) -> &'static [&'static str] {
    match basearch {
        "x86_64" => &["x86_64", "athlon", "i686", "i586", "i486", "i386"],
        "i386" => &["athlon", "i686", "i586", "i486", "i386"],
        "aarch64" => &["aarch64"],
        "ppc64le" => &["ppc64le"],
        "s390x" => &["s390x"],
        "armhfp" => &["armv7hl", "armv7hnl"],
        _ => &[],
    }
}

/// Whether `candidate` may replace an installed package of `installed` arch: the same arch,
/// or a change to or from noarch (libsolv's arch policy), within what the machine runs.
fn arch_upgrades(installed: &str, candidate: &str, basearch: &str) -> bool {
    installed == candidate
        || candidate == "noarch"
        || (installed == "noarch" && (candidate == basearch || compatible_arches(basearch).contains(&candidate)))
}

fn cmp_evr(a: (u32, &str, &str), b: (u32, &str, &str)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| rpmvercmp(a.1, b.1))
        .then_with(|| rpmvercmp(a.2, b.2))
}

fn show_evr(epoch: u32, version: &str, release: &str) -> String {
    if epoch == 0 {
        format!("{version}-{release}")
    } else {
        format!("{epoch}:{version}-{release}")
    }
}

impl Available {
    fn evr(&self) -> (u32, &str, &str) {
        (self.epoch, &self.version, &self.release)
    }
}

/// What `dnf check-update` lists at its default settings: for every installed name.arch (the
/// highest installed version, as with several kernels), the highest EVR any enabled
/// repository offers with a compatible arch, if newer. Obsoletes are not considered (dnf
/// lists them separately); repository priorities, excludes and modularity filtering are not
/// applied. `security`: a `type="security"` advisory names the package at a version newer than
/// the installed one and not newer than the candidate; for repositories without
/// updateinfo, the repository's id or name contains "security" (an approximation).
pub fn upgradable(installed: &[RpmPackage], basearch: &str, repos: &[RepoIndex<'_>]) -> Vec<RpmUpgrade> {
    let mut newest: BTreeMap<(&str, &str), (u32, &str, &str)> = BTreeMap::new();
    for p in installed.iter().filter(|p| !p.arch.is_empty()) {
        let evr = (p.epoch.unwrap_or(0), p.version.as_str(), p.release.as_str());
        newest
            .entry((&p.name, &p.arch))
            .and_modify(|e| {
                if cmp_evr(evr, *e) == Ordering::Greater {
                    *e = evr;
                }
            })
            .or_insert(evr);
    }
    let mut by_name: HashMap<&str, Vec<(&RepoIndex<'_>, &Available)>> = HashMap::new();
    for repo in repos {
        for p in repo.packages {
            by_name.entry(&p.name).or_default().push((repo, p));
        }
    }
    let mut out = Vec::new();
    for ((name, arch), evr) in newest {
        let offers: Vec<_> = by_name
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(_, p)| arch_upgrades(arch, &p.arch, basearch))
                    .collect()
            })
            .unwrap_or_default();
        let Some(best) = offers
            .iter()
            .map(|(_, p)| *p)
            .max_by(|a, b| cmp_evr(a.evr(), b.evr()).then_with(|| (a.arch == arch).cmp(&(b.arch == arch))))
        else {
            continue;
        };
        if cmp_evr(best.evr(), evr) != Ordering::Greater {
            continue;
        }
        let mut ids: Vec<String> = offers
            .iter()
            .filter(|(_, p)| p.arch == best.arch && cmp_evr(p.evr(), best.evr()) == Ordering::Equal)
            .map(|(r, _)| r.id.to_owned())
            .collect();
        ids.dedup();
        let fixes = |a: &&Advisory| {
            a.kind == "security"
                && a.packages.iter().any(|p| {
                    p.name == name
                        && (p.arch == arch || p.arch == best.arch)
                        && cmp_evr(p.evr(), evr) == Ordering::Greater
                        && cmp_evr(p.evr(), best.evr()) != Ordering::Greater
                })
        };
        let mut advisories: Vec<String> = repos
            .iter()
            .filter_map(|r| r.advisories)
            .flat_map(|a| a.iter().filter(fixes).map(|a| a.id.clone()))
            .collect();
        advisories.sort();
        advisories.dedup();
        let security = repos.iter().any(|r| match r.advisories {
            Some(a) => a.iter().any(|a| fixes(&a)),
            None => {
                ids.iter().any(|id| id == r.id)
                    && [r.id, r.name]
                        .iter()
                        .any(|s| s.to_ascii_lowercase().contains("security"))
            }
        });
        out.push(RpmUpgrade {
            name: name.to_owned(),
            arch: best.arch.clone(),
            installed: show_evr(evr.0, evr.1, evr.2),
            candidate: show_evr(best.epoch, &best.version, &best.release),
            repos: ids,
            security,
            advisories,
        });
    }
    out
}

fn push_bounded<R: BufRead>(text: &mut String, more: &str, xml: &Xml<R>) -> Result<(), RpmMdError> {
    if text.len() + more.len() > MAX_FIELD {
        return Err(xml.error(format!("a field longer than {MAX_FIELD} bytes")));
    }
    text.push_str(more);
    Ok(())
}

/// `epoch`/`version`/`release` attributes (names differ between primary and updateinfo); an
/// absent epoch is 0.
fn evr_attrs<R: BufRead>(
    xml: &Xml<R>,
    attrs: &[(String, String)],
    epoch: &str,
    version: &str,
    release: &str,
) -> Result<(u32, String, String), RpmMdError> {
    let e = match attrs.iter().find(|(k, _)| k == epoch) {
        Some((_, v)) if v.is_empty() => 0,
        Some((_, v)) => v
            .parse()
            .map_err(|_| xml.error(format!("epoch {v:?} is not a number")))?,
        None => 0,
    };
    Ok((
        e,
        xml.attr(attrs, version)?.to_owned(),
        xml.attr(attrs, release)?.to_owned(),
    ))
}

enum Item {
    /// An element opened at `level` (the root is 1), with its attributes (unescaped).
    Open {
        level: usize,
        name: String,
        attrs: Vec<(String, String)>,
    },
    /// The element at `level` closed.
    Close { level: usize },
    /// Character data (entity and character references resolved) inside the current element.
    Text(String),
}

/// quick-xml's pull reader with this module's bounds, yielding owned items.
struct Xml<R> {
    reader: Reader<std::io::Take<R>>,
    buf: Vec<u8>,
    file: String,
    limit: u64,
    depth: usize,
}

impl<R: BufRead> Xml<R> {
    fn new(input: R, file: &str, limit: u64) -> Self {
        let mut reader = Reader::from_reader(input.take(limit.saturating_add(1)));
        reader.config_mut().expand_empty_elements = true;
        Self {
            reader,
            buf: Vec::new(),
            file: file.to_owned(),
            limit,
            depth: 0,
        }
    }

    fn error(&self, what: impl Into<String>) -> RpmMdError {
        RpmMdError {
            file: self.file.clone(),
            offset: self.reader.buffer_position(),
            what: what.into(),
        }
    }

    fn attr<'a>(&self, attrs: &'a [(String, String)], key: &str) -> Result<&'a str, RpmMdError> {
        let value = attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| self.error(format!("element without its {key}= attribute")))?;
        if value.len() > MAX_FIELD {
            return Err(self.error(format!("attribute {key}= longer than {MAX_FIELD} bytes")));
        }
        Ok(value)
    }

    fn utf8<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, RpmMdError> {
        std::str::from_utf8(bytes).map_err(|e| self.error(format!("not UTF-8: {e}")))
    }

    fn open(&mut self, e: &BytesStart<'_>) -> Result<Item, RpmMdError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("elements nested deeper than {MAX_DEPTH}")));
        }
        let name = self.utf8(e.name().as_ref())?.to_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            if attrs.len() >= MAX_ATTRIBUTES {
                return Err(self.error(format!("<{name}> with more than {MAX_ATTRIBUTES} attributes")));
            }
            let a = a.map_err(|e| self.error(format!("<{name}>: {e}")))?;
            let key = self.utf8(a.key.as_ref())?.to_owned();
            let value = a
                .unescape_value()
                .map_err(|e| self.error(format!("<{name} {key}=…>: {e}")))?
                .into_owned();
            attrs.push((key, value));
        }
        self.depth += 1;
        Ok(Item::Open {
            level: self.depth,
            name,
            attrs,
        })
    }

    fn next(&mut self) -> Result<Option<Item>, RpmMdError> {
        // The event borrows the buffer: keep it apart from `self` meanwhile.
        let mut buf = std::mem::take(&mut self.buf);
        let item = self.next_in(&mut buf);
        self.buf = buf;
        item
    }

    fn next_in(&mut self, buf: &mut Vec<u8>) -> Result<Option<Item>, RpmMdError> {
        loop {
            buf.clear();
            let event = self.reader.read_event_into(buf);
            if self.reader.buffer_position() > self.limit {
                return Err(self.error(format!("larger than {} bytes", self.limit)));
            }
            let event = event.map_err(|e| RpmMdError {
                file: self.file.clone(),
                offset: self.reader.error_position(),
                what: e.to_string(),
            })?;
            let item = match event {
                Event::Start(e) => self.open(&e)?,
                Event::End(_) => {
                    let level = self.depth;
                    self.depth = level.saturating_sub(1);
                    Item::Close { level }
                }
                Event::Text(t) => Item::Text(self.utf8(&t)?.to_owned()),
                Event::CData(t) => Item::Text(self.utf8(&t)?.to_owned()),
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = self.utf8(&r)?;
                            quick_xml::escape::resolve_predefined_entity(name)
                                .ok_or_else(|| self.error(format!("unknown entity &{name};")))?
                                .to_owned()
                        }
                        Err(e) => return Err(self.error(e.to_string())),
                    };
                    Item::Text(resolved)
                }
                Event::Eof => {
                    if self.depth != 0 {
                        return Err(self.error("ends inside an element (truncated?)"));
                    }
                    return Ok(None);
                }
                Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => continue,
            };
            if buf.len() > MAX_EVENT {
                return Err(self.error(format!("a tag or text run longer than {MAX_EVENT} bytes")));
            }
            return Ok(Some(item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <data type="primary">
    <checksum type="sha256">AB12</checksum>
    <open-checksum type="sha256">cd34</open-checksum>
    <location href="repodata/ab12-primary.xml.zst"/>
    <size>1234</size>
    <open-size>9999</open-size>
  </data>
  <data type="filelists"><location href="repodata/f.xml.gz"/></data>
</repomd>"#;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm"><name>foo</name><arch>x86_64</arch><version epoch="0" ver="2.0" rel="1"/>
  <summary>a &amp; b</summary><format><rpm:provides><rpm:entry name="foo" ver="2.0"/></rpm:provides><file>/usr/bin/foo</file></format></package>
<package type="rpm"><name>foo</name><arch>i686</arch><version epoch="1" ver="0.1" rel="1"/></package>
<package type="rpm"><name>b&#97;r</name><arch>noarch</arch><version ver="3" rel="2.fc40"/></package>
</metadata>"#;

    const UPDATEINFO: &str = r#"<?xml version="1.0"?>
<updates><update from="x" status="stable" type="security" version="2.0"><id>ADV-1</id>
<pkglist><collection short="c"><package name="foo" version="2.0" release="1" epoch="0" arch="x86_64" src="s"><filename>f</filename></package></collection></pkglist></update>
<update type="bugfix"><id>ADV-2</id><pkglist><collection><package name="bar" version="3" release="2.fc40" epoch="0" arch="noarch"/></collection></pkglist></update>
</updates>"#;

    fn installed(name: &str, arch: &str, epoch: Option<u32>, version: &str, release: &str) -> RpmPackage {
        RpmPackage {
            name: name.into(),
            epoch,
            version: version.into(),
            release: release.into(),
            arch: arch.into(),
            files: Vec::new(),
            sourcerpm: None,
            license: None,
        }
    }

    #[test]
    fn repomd() {
        let r = Repomd::parse(REPOMD.as_bytes(), "repomd.xml").unwrap();
        let p = r.get("primary").unwrap();
        assert_eq!(p.href, "repodata/ab12-primary.xml.zst");
        assert_eq!(p.checksum, Some(("sha256".into(), "ab12".into())));
        assert_eq!(p.size, Some(1234));
        assert_eq!(r.get("filelists").unwrap().size, None);
        assert!(r.get("updateinfo").is_none());
        let e = Repomd::parse(b"<metadata/>", "x").unwrap_err();
        assert!(e.what.contains("not a repomd.xml"), "{e}");
        assert!(Repomd::parse(b"<repomd><data type=\"primary\"></data></repomd>", "x").is_err());
        assert!(Repomd::parse(b"<repomd><data type=\"primary\">", "x").is_err());
    }

    #[test]
    fn primary() {
        let p = parse_primary(PRIMARY.as_bytes(), "primary.xml", 1 << 20).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].name.as_str(), p[0].arch.as_str(), p[0].epoch),
            ("foo", "x86_64", 0)
        );
        assert_eq!((p[1].epoch, p[1].version.as_str()), (1, "0.1"));
        assert_eq!((p[2].name.as_str(), p[2].release.as_str()), ("bar", "2.fc40"));
        // Bounds: total size, a missing field, an undefined entity, deep nesting.
        let e = parse_primary(PRIMARY.as_bytes(), "p", 100).unwrap_err();
        assert!(e.what.contains("larger than 100"), "{e}");
        assert!(
            parse_primary(
                &b"<metadata><package><name>x</name></package></metadata>"[..],
                "p",
                1 << 20
            )
            .is_err()
        );
        assert!(
            parse_primary(
                &b"<metadata><package><name>&x;</name></package></metadata>"[..],
                "p",
                1 << 20
            )
            .is_err()
        );
        let deep = format!("<metadata>{}", "<a>".repeat(100));
        assert!(
            parse_primary(deep.as_bytes(), "p", 1 << 20)
                .unwrap_err()
                .what
                .contains("deeper")
        );
        let long = format!(
            "<metadata><package><name>{}</name></package></metadata>",
            "x".repeat(5000)
        );
        assert!(parse_primary(long.as_bytes(), "p", 1 << 20).is_err());
    }

    #[test]
    fn selection_and_security() {
        let avail = parse_primary(PRIMARY.as_bytes(), "primary.xml", 1 << 20).unwrap();
        let advisories = parse_updateinfo(UPDATEINFO.as_bytes(), "updateinfo.xml", 1 << 20).unwrap();
        assert_eq!(advisories.len(), 2);
        assert_eq!(
            (advisories[0].id.as_str(), advisories[0].kind.as_str()),
            ("ADV-1", "security")
        );
        let installed = [
            installed("foo", "x86_64", None, "1.0", "1"),
            installed("foo", "x86_64", None, "1.5", "1"),
            installed("bar", "noarch", Some(0), "3", "1.fc40"),
            installed("baz", "x86_64", None, "1", "1"),
            installed("gpg-pubkey", "", None, "1", "1"),
        ];
        let repo = |advisories| RepoIndex {
            id: "updates",
            name: "Updates",
            packages: &avail,
            advisories,
        };
        let got = upgradable(&installed, "x86_64", &[repo(Some(&advisories))]);
        // foo.i686 (epoch 1) is not an upgrade of foo.x86_64; the highest installed foo counts.
        assert_eq!(
            got.iter()
                .map(|u| (
                    u.name.as_str(),
                    u.arch.as_str(),
                    u.installed.as_str(),
                    u.candidate.as_str(),
                    u.security
                ))
                .collect::<Vec<_>>(),
            [
                ("bar", "noarch", "3-1.fc40", "3-2.fc40", false),
                ("foo", "x86_64", "1.5-1", "2.0-1", true),
            ]
        );
        assert_eq!(got[0].repos, ["updates"]);
        assert!(got[0].advisories.is_empty(), "a bugfix advisory is not a security one");
        assert_eq!(got[1].advisories, ["ADV-1"]);
        // Without updateinfo, by the repository's name.
        let plain = upgradable(&installed, "x86_64", &[repo(None)]);
        assert!(plain.iter().all(|u| !u.security && u.advisories.is_empty()));
        let sec = RepoIndex {
            id: "el-security",
            ..repo(None)
        };
        assert!(upgradable(&installed, "x86_64", &[sec]).iter().all(|u| u.security));
    }
}
