//! Reports waiting for the collector, on disk: one file a report, written whole or not at all
//! (a temporary file, fsync, rename, fsync of the directory), taken oldest first, removed only
//! once the collector has it. The spool is bounded: a report that would not fit evicts the
//! oldest, and evictions are counted. What a crash or restart leaves is picked up again.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use mptcp_probe_model::Report;

const SUFFIX: &str = ".json";
const TEMP_PREFIX: &str = ".tmp-";

/// One spooled report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

/// What [`Spool::put`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Put {
    /// Older reports removed to make room.
    pub evicted: u64,
}

impl Spool {
    /// Opens (creating) the directory; leftovers of an interrupted write are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating the spool directory {}", dir.display()))?;
        for e in fs::read_dir(dir).with_context(|| format!("reading the spool {}", dir.display()))?.flatten()
        {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self { dir: dir.to_path_buf(), max_bytes })
    }

    /// The spooled reports, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(dir) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<Entry> = dir
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(SUFFIX) && !name.starts_with(TEMP_PREFIX)
            })
            .filter_map(|e| Some(Entry { path: e.path(), bytes: e.metadata().ok()?.len() }))
            .collect();
        // Names start with the time the report was spooled, zero-padded: by name is by age.
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    pub fn bytes(&self) -> u64 {
        self.entries().iter().map(|e| e.bytes).sum()
    }

    /// Spools a report, evicting the oldest while it would not fit.
    pub fn put(&self, report: &Report) -> anyhow::Result<Put> {
        let body = serde_json::to_vec(report)?;
        let size = body.len() as u64;
        if size > self.max_bytes {
            bail!("report {} ({size} B) is larger than the whole spool ({} B)", report.id, self.max_bytes);
        }
        // Written and synced first: a report that cannot be kept evicts nothing.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        // The report id is a UUID the check made; anything else is kept out of the file name.
        let id: String =
            report.id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
        let name = format!("{nanos:024}-{id}{SUFFIX}");
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let written = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
        let mut put = Put::default();
        let mut entries = self.entries();
        let mut used: u64 = entries.iter().map(|e| e.bytes).sum();
        while used + size > self.max_bytes && !entries.is_empty() {
            let oldest = entries.remove(0);
            if let Err(e) = fs::remove_file(&oldest.path) {
                let _ = fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("evicting {} from the spool", oldest.path.display()));
            }
            used -= oldest.bytes;
            put.evicted += 1;
        }
        if let Err(e) = fs::rename(&tmp, self.dir.join(&name)) {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("renaming {}", tmp.display()));
        }
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(put)
    }

    /// Reads a spooled report back; a file that is not one is an error naming it.
    pub fn read(&self, e: &Entry) -> anyhow::Result<Report> {
        let body = fs::read(&e.path).with_context(|| format!("reading {}", e.path.display()))?;
        serde_json::from_slice(&body).with_context(|| format!("{} is not a report", e.path.display()))
    }

    pub fn remove(&self, e: &Entry) -> anyhow::Result<()> {
        fs::remove_file(&e.path).with_context(|| format!("removing {} from the spool", e.path.display()))
    }

    /// Moves a report the collector refused for good out of the queue, keeping it for a person
    /// to look at (`rejected/` in the spool).
    pub fn reject(&self, e: &Entry) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("rejected");
        fs::create_dir_all(&dir)?;
        let to = dir.join(e.path.file_name().unwrap_or_default());
        fs::rename(&e.path, &to)
            .with_context(|| format!("moving {} to {}", e.path.display(), to.display()))?;
        Ok(to)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::export::tests::report;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mpp-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        Dir(d)
    }

    #[test]
    fn reports_come_back_oldest_first_and_whole() {
        let d = dir("order");
        let s = Spool::open(&d.0, 1 << 20).unwrap();
        for id in ["a", "b", "c"] {
            assert_eq!(s.put(&report(id)).unwrap(), Put::default());
        }
        let ids: Vec<String> = s.entries().iter().map(|e| s.read(e).unwrap().id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        s.remove(&s.entries()[0]).unwrap();
        // Reopened (a restart): the rest is still there, and a torn write is gone.
        fs::write(d.0.join(".tmp-000-x.json"), b"{\"half").unwrap();
        let s = Spool::open(&d.0, 1 << 20).unwrap();
        let ids: Vec<String> = s.entries().iter().map(|e| s.read(e).unwrap().id).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(!d.0.join(".tmp-000-x.json").exists());
    }

    #[test]
    fn a_full_spool_evicts_the_oldest_and_says_how_many() {
        let d = dir("cap");
        let one = serde_json::to_vec(&report("a")).unwrap().len() as u64;
        let s = Spool::open(&d.0, 2 * one + one / 2).unwrap();
        s.put(&report("a")).unwrap();
        s.put(&report("b")).unwrap();
        assert_eq!(s.put(&report("c")).unwrap(), Put { evicted: 1 });
        let ids: Vec<String> = s.entries().iter().map(|e| s.read(e).unwrap().id).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(s.bytes() <= 2 * one + one / 2);
        let tiny = Spool::open(&d.0, 10).unwrap();
        let e = format!("{:#}", tiny.put(&report("d")).unwrap_err());
        assert!(e.contains("larger than the whole spool"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_report_is_named_and_can_be_set_aside() {
        let d = dir("bad");
        let s = Spool::open(&d.0, 1 << 20).unwrap();
        fs::write(d.0.join("000-junk.json"), b"not json").unwrap();
        let e = &s.entries()[0];
        let err = format!("{:#}", s.read(e).unwrap_err());
        assert!(err.contains("000-junk.json is not a report"), "{err}");
        let to = s.reject(e).unwrap();
        assert!(to.ends_with("rejected/000-junk.json") && to.exists());
        assert!(s.entries().is_empty());
    }

    #[test]
    fn an_id_cannot_name_a_file_outside_the_spool() {
        let d = dir("id");
        let s = Spool::open(&d.0, 1 << 20).unwrap();
        s.put(&report("../../etc/x")).unwrap();
        let e = &s.entries()[0];
        assert_eq!(e.path.parent(), Some(d.0.as_path()));
        assert!(e.path.file_name().unwrap().to_string_lossy().ends_with("-etcx.json"), "{e:?}");
    }
}
