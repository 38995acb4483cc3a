//! The results database (SQLite): every check's report, per VM, so `--since` can say what
//! changed and queries over many VMs need no new check.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::CheckError;
use crate::report::{Finding, Report};

pub struct ResultsDb {
    conn: Connection,
    path: String,
}

/// What changed for one VM between two checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub vm: String,
    /// When the previous check ran; `None` if this is the first.
    pub previous_at: Option<u64>,
    pub new: Vec<Finding>,
    pub resolved: Vec<Finding>,
    /// (before, after) for packages whose installed or candidate version moved.
    pub changed: Vec<(Finding, Finding)>,
}

impl ResultsDb {
    pub fn open(path: &Path) -> Result<Self, CheckError> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CheckError::Db {
                path: name.clone(),
                what: format!("creating {}: {e}", dir.display()),
            })?;
        }
        let db_err = |e: rusqlite::Error| CheckError::Db {
            path: name.clone(),
            what: e.to_string(),
        };
        let conn = Connection::open(path).map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS checks (
                 id INTEGER PRIMARY KEY, vm TEXT NOT NULL, checked_at INTEGER NOT NULL, report TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS checks_vm ON checks (vm, id);
             CREATE TABLE IF NOT EXISTS findings (
                 check_id INTEGER NOT NULL REFERENCES checks (id), name TEXT NOT NULL, arch TEXT NOT NULL,
                 installed TEXT NOT NULL, candidate TEXT NOT NULL, suites TEXT NOT NULL, priority TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS findings_check ON findings (check_id);
             CREATE INDEX IF NOT EXISTS findings_name ON findings (name);",
        )
        .map_err(db_err)?;
        Ok(Self { conn, path: name })
    }

    fn err(&self, e: impl std::fmt::Display) -> CheckError {
        CheckError::Db {
            path: self.path.clone(),
            what: e.to_string(),
        }
    }

    /// Stores a report; returns its id.
    pub fn record(&mut self, report: &Report) -> Result<i64, CheckError> {
        let json = serde_json::to_string(report).map_err(|e| self.err(e))?;
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| CheckError::Db {
            path: path.clone(),
            what: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(|e| err(&e))?;
        let id = {
            tx.execute(
                "INSERT INTO checks (vm, checked_at, report) VALUES (?1, ?2, ?3)",
                params![report.vm, report.checked_at as i64, json],
            )
            .map_err(|e| err(&e))?;
            let id = tx.last_insert_rowid();
            let mut stmt = tx
                .prepare("INSERT INTO findings VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .map_err(|e| err(&e))?;
            for f in &report.upgrades {
                let priority = serde_json::to_value(f.priority).map_err(|e| err(&e))?;
                stmt.execute(params![
                    id,
                    f.name,
                    f.arch,
                    f.installed,
                    f.candidate,
                    f.suites.join(","),
                    priority.as_str().unwrap_or("normal")
                ])
                .map_err(|e| err(&e))?;
            }
            id
        };
        tx.commit().map_err(|e| err(&e))?;
        Ok(id)
    }

    /// The latest report of `vm` stored before check `before` (all of them if `None`).
    pub fn previous(&self, vm: &str, before: Option<i64>) -> Result<Option<Report>, CheckError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT report FROM checks WHERE vm = ?1 AND id < ?2 ORDER BY id DESC LIMIT 1",
                params![vm, before.unwrap_or(i64::MAX)],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| self.err(format!("stored report of {vm}: {e}"))))
            .transpose()
    }
}

/// Compares two reports of the same VM by (package, architecture).
pub fn changes(previous: Option<&Report>, current: &Report) -> Changes {
    let key = |f: &Finding| (f.name.clone(), f.arch.clone());
    let before = previous.map(|p| p.upgrades.as_slice()).unwrap_or_default();
    let mut out = Changes {
        vm: current.vm.clone(),
        previous_at: previous.map(|p| p.checked_at),
        new: Vec::new(),
        resolved: Vec::new(),
        changed: Vec::new(),
    };
    for f in &current.upgrades {
        match before.iter().find(|b| key(b) == key(f)) {
            None => out.new.push(f.clone()),
            Some(b) if b != f => out.changed.push((b.clone(), f.clone())),
            Some(_) => {}
        }
    }
    for b in before {
        if !current.upgrades.iter().any(|f| key(f) == key(b)) {
            out.resolved.push(b.clone());
        }
    }
    out
}

/// `--since` as text.
pub fn changes_text(c: &Changes) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(at) = c.previous_at else {
        return format!("{}: first check, nothing to compare with\n", c.vm);
    };
    let _ = writeln!(
        s,
        "{}: since the check at {at} (unix time): {} new, {} resolved, {} changed",
        c.vm,
        c.new.len(),
        c.resolved.len(),
        c.changed.len()
    );
    for f in &c.new {
        let _ = writeln!(s, "  + {}:{} {} -> {}", f.name, f.arch, f.installed, f.candidate);
    }
    for f in &c.resolved {
        let _ = writeln!(s, "  - {}:{} (was {} -> {})", f.name, f.arch, f.installed, f.candidate);
    }
    for (b, a) in &c.changed {
        let _ = writeln!(
            s,
            "  ~ {}:{} {} -> {} now {} -> {}",
            a.name, a.arch, b.installed, b.candidate, a.installed, a.candidate
        );
    }
    s
}
