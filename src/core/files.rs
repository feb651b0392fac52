//! Output files: staging a candidate next to the live file, replacing it atomically, removing
//! the temporaries a killed watcher left behind, and the diff shown by `--dry-run`.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Random characters in a staged file's name: `.<name>.<RAND_LEN alphanumerics>.tmp`.
const RAND_LEN: usize = 6;
const TMP_SUFFIX: &str = ".tmp";

/// The name of `target`'s file, or "" when it has none.
fn file_name(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The folder `target` lives in (`.` for a bare file name).
fn folder(target: &Path) -> &Path {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Whether `candidate` is a name [`Staged::write`] gives its temporaries for a live file
/// named `name`: `.<name>.` then exactly [`RAND_LEN`] ASCII letters or digits, then `.tmp`.
fn is_staged_name(name: &str, candidate: &OsStr) -> bool {
    let Some(candidate) = candidate.to_str() else {
        return false;
    };
    let random = candidate
        .strip_prefix('.')
        .and_then(|c| c.strip_prefix(name))
        .and_then(|c| c.strip_prefix('.'))
        .and_then(|c| c.strip_suffix(TMP_SUFFIX));
    matches!(random, Some(r) if r.len() == RAND_LEN && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes the temporaries [`Staged::write`] left beside `target` when the process was killed
/// between writing and renaming them (`.<name>.XXXXXX.tmp` in `target`'s folder, regular files
/// only; nothing else is touched, and sub-folders are not searched). Returns the paths
/// removed. Call it at start-up, before anything is staged for `target`: a temporary being
/// written at that moment would be removed too. Errors name the folder or file at fault.
pub fn remove_stale_temporaries(target: &Path) -> std::io::Result<Vec<PathBuf>> {
    let name = file_name(target);
    let dir = folder(target);
    let named = |e: std::io::Error, path: &Path| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    let mut removed = Vec::new();
    if name.is_empty() {
        return Ok(removed);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| named(e, dir))? {
        let entry = entry.map_err(|e| named(e, dir))?;
        if !is_staged_name(&name, &entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Not followed: a symlink or folder with our name pattern is not ours.
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if !is_file {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), output = %target.display(), "removed a stale temporary file left by an interrupted write");
                removed.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(named(e, &path)),
        }
    }
    Ok(removed)
}

/// A candidate written to a temporary file in the live file's folder, ready to be validated
/// and then renamed over the live file.
pub struct Staged {
    file: NamedTempFile,
    target: PathBuf,
}

impl Staged {
    /// Writes `content` to a temporary file beside `target` and fsyncs it. The file gets the
    /// live file's permissions, or 0644 for a new one.
    pub fn write(target: &Path, content: &str) -> std::io::Result<Self> {
        let staged = Self::write_unsynced(target, content)?;
        staged.sync()?;
        Ok(staged)
    }

    /// Like [`write`](Self::write) without the fsync, which [`sync`](Self::sync) does later:
    /// a full disk or a read-only folder already fails here, and the fsync can wait until
    /// after work that should not queue behind the disk.
    pub fn write_unsynced(target: &Path, content: &str) -> std::io::Result<Self> {
        let dir = folder(target);
        let name = file_name(target);
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .rand_bytes(RAND_LEN)
            .suffix(TMP_SUFFIX)
            .tempfile_in(dir)?;
        file.write_all(content.as_bytes())?;
        let mode = std::fs::metadata(target)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(Self {
            file,
            target: target.to_path_buf(),
        })
    }

    /// Flushes the candidate to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.as_file().sync_all()
    }

    /// Where the candidate is staged (to pass to `haproxy -c`).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Renames the candidate over the live file. The content was fsynced before; the folder is
    /// not: after a crash the previous file may come back, and the watcher re-renders it at
    /// start anyway.
    pub fn commit(self) -> std::io::Result<()> {
        self.file.persist(&self.target).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Reads the live file; a missing file reads as `None`, and so does one that is not UTF-8
/// (it differs from any render, so it gets replaced). Other errors name the file.
pub fn read_live(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("--output {}: {e}", path.display()),
        )),
    }
}

/// A unified diff from the live content to the candidate, labelled with the file's path.
pub fn unified_diff(path: &Path, live: Option<&str>, candidate: &str) -> String {
    let old = live.unwrap_or("");
    similar::TextDiff::from_lines(old, candidate)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{} (live)", path.display()),
            &format!("{} (candidate)", path.display()),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_then_commit_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("out.cfg");
        std::fs::write(&live, "old\n").unwrap();
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o640)).unwrap();
        let staged = Staged::write(&live, "new\n").unwrap();
        assert!(staged.path().starts_with(dir.path()));
        assert_eq!(read_live(&live).unwrap().as_deref(), Some("old\n"));
        staged.commit().unwrap();
        assert_eq!(read_live(&live).unwrap().as_deref(), Some("new\n"));
        let mode = std::fs::metadata(&live).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("out.cfg");
        drop(Staged::write(&live, "x").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(read_live(&live).unwrap(), None);
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("backends.cfg");
        std::fs::write(&live, "live\n").unwrap();
        // What a watcher killed between write and rename leaves: a real staged file.
        let staged = Staged::write(&live, "half").unwrap();
        let stale = staged.path().to_path_buf();
        std::mem::forget(staged);
        let stale2 = dir.path().join(".backends.cfg.aB3xY9.tmp");
        std::fs::write(&stale2, "x").unwrap();
        let keep = [
            "backends.cfg.bak",
            ".backends.cfg.tmp",
            ".backends.cfg.abc.tmp",
            ".backends.cfg.abcdefg.tmp",
            ".backends.cfg.ab-de_.tmp",
            ".other.cfg.aB3xY9.tmp",
            ".backends.cfgX.aB3xY9.tmp",
            "backends.cfg.aB3xY9.tmp",
            ".backends.cfg.aB3xY9.tmp.keep",
        ];
        for k in keep {
            std::fs::write(dir.path().join(k), "keep").unwrap();
        }
        // A folder and a symlink with our pattern, and a match one level down: left alone.
        std::fs::create_dir(dir.path().join(".backends.cfg.DIR123.tmp")).unwrap();
        std::os::unix::fs::symlink(&live, dir.path().join(".backends.cfg.LNK123.tmp")).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join(".backends.cfg.aB3xY9.tmp"), "x").unwrap();

        let mut removed = remove_stale_temporaries(&live).unwrap();
        removed.sort();
        let mut want = vec![stale, stale2];
        want.sort();
        assert_eq!(removed, want);
        assert_eq!(read_live(&live).unwrap().as_deref(), Some("live\n"));
        for k in keep {
            assert!(dir.path().join(k).exists(), "{k} kept");
        }
        assert!(dir.path().join(".backends.cfg.DIR123.tmp").is_dir());
        assert!(dir.path().join(".backends.cfg.LNK123.tmp").exists());
        assert!(sub.join(".backends.cfg.aB3xY9.tmp").exists());
        assert!(remove_stale_temporaries(&live).unwrap().is_empty());
    }

    #[test]
    fn stale_temporaries_errors_name_the_folder() {
        let err =
            remove_stale_temporaries(Path::new("/nonexistent-dockreg/backends.cfg")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dockreg"), "{err}");
    }

    #[test]
    fn diff_shows_changed_lines() {
        let d = unified_diff(Path::new("o.cfg"), Some("a\nb\n"), "a\nc\n");
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
    }
}
