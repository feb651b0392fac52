//! Writing an apply's outputs: stage each changed output beside its live file (written before
//! anything reaches HAProxy, so a full disk or a read-only folder stops the apply there), then
//! fsync, validate the whole set with HAProxy, and rename each candidate over its live file.

use crate::core::files::Staged;
use crate::haproxy::{CheckError, Validate};
use crate::watcher::render::TemplateSpec;
use std::path::PathBuf;

/// Stages the changed outputs (`changed` indexes `specs` and `candidates`). An error names
/// the output that could not be written (a full disk, a read-only folder).
pub fn stage(
    specs: &[TemplateSpec],
    candidates: &[Option<super::commit::Content>],
    changed: &[usize],
) -> Result<Vec<(usize, Staged)>, String> {
    let mut staged = Vec::with_capacity(changed.len());
    for &i in changed {
        let out = &specs[i].output;
        let text = candidates[i].as_deref().map_or("", String::as_str);
        match Staged::write_unsynced(out, text) {
            Ok(s) => staged.push((i, s)),
            Err(e) => {
                return Err(format!(
                    "--output {}: cannot write a candidate: {e}",
                    out.display()
                ))
            }
        }
    }
    Ok(staged)
}

/// Fsyncs the staged candidates, validates them together with the live outputs they do not
/// replace (`present[i]` is false for an output not written yet), then renames each over its
/// live file. Returns the outputs replaced (some, if a rename failed midway) and the outcome.
pub async fn validate_and_commit<V: Validate>(
    specs: &[TemplateSpec],
    validator: Option<&V>,
    present: &[bool],
    staged: Vec<(usize, Staged)>,
) -> (Vec<usize>, Result<(), CheckError>) {
    for (i, s) in &staged {
        if let Err(e) = s.sync() {
            let out = specs[*i].output.display();
            let msg = format!("--output {out}: cannot write a candidate: {e}");
            return (Vec::new(), Err(CheckError::Transient(msg)));
        }
    }
    if let Some(v) = validator {
        let files: Vec<PathBuf> = (0..specs.len())
            .filter_map(|i| match staged.iter().find(|(j, _)| *j == i) {
                Some((_, s)) => Some(s.path().to_path_buf()),
                None if present[i] => Some(specs[i].output.clone()),
                None => None,
            })
            .collect();
        if let Err(e) = v.validate(&files).await {
            // Name the output and template instead of the temporary file, which is gone.
            let name = |msg: String| {
                staged.iter().fold(msg, |m, (i, s)| {
                    m.replace(
                        &s.path().display().to_string(),
                        &format!(
                            "{} (candidate from {})",
                            specs[*i].output.display(),
                            specs[*i].name()
                        ),
                    )
                })
            };
            let e = match e {
                CheckError::Refused(m) => CheckError::Refused(name(m)),
                CheckError::Transient(m) => CheckError::Transient(name(m)),
            };
            return (Vec::new(), Err(e));
        }
    }
    let mut written = Vec::with_capacity(staged.len());
    for (i, s) in staged {
        if let Err(e) = s.commit() {
            let msg = format!(
                "--output {}: cannot replace: {e}",
                specs[i].output.display()
            );
            return (written, Err(CheckError::Transient(msg)));
        }
        written.push(i);
    }
    (written, Ok(()))
}
