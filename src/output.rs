//! Output files: staging a candidate next to the live file, replacing it atomically, and the
//! diff shown by `--dry-run`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

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
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        file.write_all(content.as_bytes())?;
        let mode = std::fs::metadata(target)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.as_file().sync_all()?;
        Ok(Self {
            file,
            target: target.to_path_buf(),
        })
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
    fn diff_shows_changed_lines() {
        let d = unified_diff(Path::new("o.cfg"), Some("a\nb\n"), "a\nc\n");
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
    }
}
