//! At daemon start, before the API answers: finish or roll back whatever a crash
//! interrupted, as the database's records of intent say, and never delete what no record
//! explains: such a volume is moved aside (quarantined) and logged, so a database restored
//! from an old backup cannot wipe newer instances. A volume whose `backup.yaml` describes
//! it stays in place for `hutchd recover`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hutch_storage::StorageDriver;

use super::create::remove_leftovers;
use super::lifecycle::{finish_delete, move_instance_files};
use crate::daemon::{instance_vol, Daemon};
use crate::db::intents::IntentKind;
use crate::error::{DaemonError, Result};

/// Creates are rolled back, deletes and renames finished, debris of incomplete copies and
/// unpacks removed, unknown volumes quarantined, and every instance directory closed.
pub fn reconcile(d: &Daemon) -> Result<()> {
    for name in d.db.creating_instances()? {
        tracing::info!(instance = %name, "removing an instance whose create was interrupted");
        remove_leftovers(d, &name);
    }
    for name in d.db.deleting_instances()? {
        tracing::info!(instance = %name, "finishing a delete that was interrupted");
        if let Some(row) = d.db.instance(&name)? {
            if let Err(e) = finish_delete(d, &name, &row.pool) {
                tracing::error!(instance = %name, error = %e.chain(), "finish a delete");
            }
        }
    }
    for intent in d.db.intents()? {
        tracing::info!(kind = ?intent.kind, pool = %intent.pool, name = %intent.name, "finishing a delete that was interrupted");
        let done = match intent.kind {
            IntentKind::Image => super::image_catalog::finish_delete_image(d, &intent.name),
            IntentKind::Snapshot => match intent.name.split_once('/') {
                Some((name, snap)) => super::snapshot::finish_delete_snapshot(d, name, snap, false),
                None => d.db.clear_intent(intent.kind, &intent.pool, &intent.name),
            },
            IntentKind::Volume => {
                super::volumes::finish_volume_delete(d, &intent.pool, &intent.name)
            }
            IntentKind::VolumeCreate => {
                super::volumes::undo_volume_create(d, &intent.pool, &intent.name)
            }
            IntentKind::Pool => super::pools::finish_pool_delete(d, &intent.name),
            // Networks: finished as networks are brought back (`networks::start_networks`).
            IntentKind::Network => Ok(()),
        };
        if let Err(e) = done {
            tracing::error!(name = %intent.name, error = %e.chain(), "finish a delete");
        }
    }
    super::backups::reconcile_backups(d)?;
    for (old, new) in d.db.instance_renames()? {
        tracing::info!(from = %old, to = %new, "finishing a rename that was interrupted");
        let Some(row) = d.db.instance(&new)? else {
            d.db.end_instance_rename(&old)?;
            continue;
        };
        match move_instance_files(d, &row.pool, &old, &new) {
            Ok(()) => d.db.end_instance_rename(&old)?,
            Err(e) => {
                tracing::error!(from = %old, to = %new, error = %e.chain(), "finish a rename")
            }
        }
    }
    let rows = d.db.instances()?;
    // A delete that could not finish keeps its row, and its volume stays where it is.
    let mut owners: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.name.clone(), r.pool.clone()))
        .collect();
    for name in d.db.deleting_instances()? {
        if let Some(row) = d.db.instance(&name)? {
            owners.push((name, row.pool));
        }
    }
    for pool_name in d.pool_names() {
        let pool = d.pool(&pool_name)?;
        let known: HashSet<&str> = owners
            .iter()
            .filter(|(_, p)| *p == pool_name)
            .map(|(n, _)| n.as_str())
            .collect();
        sweep_instance_volumes(&*pool, &pool_name, &known)?;
        let images = pool.root().join("images");
        for entry in read_dir(&images)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".unpacking") {
                let _ = pool.delete_volume(&Path::new("images").join(&name));
            }
        }
    }
    // Uploads that never finished.
    for entry in read_dir(&d.dir.join("images"))? {
        if entry.file_name().to_string_lossy().starts_with(".upload-") {
            // An OCI import's scratch root is a directory.
            match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => drop(std::fs::remove_dir_all(entry.path())),
                false => drop(std::fs::remove_file(entry.path())),
            }
        }
    }
    for row in &rows {
        if let Ok(expanded) = super::expand(d, row) {
            super::create::secure_instance_volume(d, row, &expanded)?;
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| DaemonError::io("read", dir, e))?
        .flatten()
        .collect())
}

/// What to do with an entry of a pool's `containers/` that no instance row owns.
#[derive(Debug, PartialEq, Eq)]
enum Stray {
    /// The staging copy of an unfinished copy, restore or clone: never whole, removed.
    Debris,
    /// `.X.old` of a restore interrupted between its renames, with `X` missing: it is the
    /// instance itself, put back.
    PutBack(String),
    /// A volume nobody explains: moved aside, never deleted.
    Quarantine,
}

fn classify(entry: &str, known: &HashSet<&str>, exists: impl Fn(&str) -> bool) -> Option<Stray> {
    if known.contains(entry) {
        return None;
    }
    let Some(inner) = entry.strip_prefix('.') else {
        return Some(Stray::Quarantine);
    };
    if let Some(name) = inner.strip_suffix(".old") {
        return Some(if exists(name) {
            Stray::Debris
        } else {
            Stray::PutBack(name.to_string())
        });
    }
    if inner.ends_with(".copying") || inner.ends_with(".restoring") {
        return Some(Stray::Debris);
    }
    Some(Stray::Quarantine)
}

fn sweep_instance_volumes(
    pool: &dyn StorageDriver,
    pool_name: &str,
    known: &HashSet<&str>,
) -> Result<()> {
    let vols = pool.root().join("containers");
    let names: Vec<String> = read_dir(&vols)?
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let exists = |n: &str| names.iter().any(|m| m == n);
    for name in &names {
        let vol = Path::new("containers").join(name);
        match classify(name, known, exists) {
            None => {}
            Some(Stray::Debris) => {
                tracing::info!(volume = %name, pool = %pool_name, "removing an unfinished copy");
                let _ = pool.delete_volume(&vol);
            }
            Some(Stray::PutBack(instance)) => {
                tracing::warn!(volume = %name, pool = %pool_name, "putting back the volume of an interrupted restore");
                pool.rename_volume(&vol, &instance_vol(&instance))?;
            }
            Some(Stray::Quarantine) if describes_itself(&pool.path(&vol), name) => {
                // The database lost it (deleted, restored from an old copy): recover
                // brings it back from its backup.yaml, so it stays where recover looks.
                tracing::warn!(
                    volume = %name,
                    pool = %pool_name,
                    "no instance owns this volume, but its backup.yaml describes it: left in place, run `hutchd recover`"
                );
            }
            Some(Stray::Quarantine) => {
                let aside = quarantine_name(name);
                tracing::warn!(
                    volume = %name,
                    pool = %pool_name,
                    to = %pool.path(&aside).display(),
                    "no instance owns this volume: moved aside, not deleted"
                );
                pool.rename_volume(&vol, &aside)?;
            }
        }
    }
    Ok(())
}

/// Whether the volume at `path` holds a `backup.yaml` that names it `name`.
fn describes_itself(path: &Path, name: &str) -> bool {
    std::fs::read_to_string(path.join(super::backup_yaml::INSTANCE_FILE))
        .ok()
        .and_then(|text| hutch_backup::Config::from_yaml(&text).ok())
        .and_then(|c| c.container)
        .is_some_and(|c| c.name == name)
}

/// `quarantine/containers-<name>-<unix seconds>`: unique enough for one start, readable.
fn quarantine_name(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Path::new("quarantine").join(format!(
        "containers-{}-{secs}",
        name.trim_start_matches('.')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strays_are_sorted_so_nothing_whole_is_deleted() {
        let known: HashSet<&str> = ["c1"].into_iter().collect();
        let present = [
            "c1",
            "c2",
            ".c1.old",
            ".c3.old",
            ".c1.copying",
            ".c1.restoring",
        ];
        let exists = |n: &str| present.contains(&n);
        assert_eq!(classify("c1", &known, exists), None);
        assert_eq!(classify("c2", &known, exists), Some(Stray::Quarantine));
        assert_eq!(classify(".c1.old", &known, exists), Some(Stray::Debris));
        assert_eq!(
            classify(".c3.old", &known, exists),
            Some(Stray::PutBack("c3".into()))
        );
        assert_eq!(classify(".c1.copying", &known, exists), Some(Stray::Debris));
        assert_eq!(
            classify(".c1.restoring", &known, exists),
            Some(Stray::Debris)
        );
        assert_eq!(classify(".weird", &known, exists), Some(Stray::Quarantine));
    }
}
