//! A backup tarball read from a stream, with every entry checked before anything is
//! written. Owned by the import work.
//!
//! The stream is never spooled: `backup/index.yaml` must come first and is handed to the
//! [`Sink`], which decides where each volume goes; then each volume's files are written
//! below the directory the sink gives (see [`extract`] for how writes are kept inside
//! it), or, in an optimized backup, each volume's stream is handed to the sink to
//! receive. Whatever the tarball holds is hostile: paths that climb out, entries outside
//! `backup/`, writes through symlinks, hard links out of their volume, device nodes,
//! snapshots the index does not list (or listed ones missing), more bytes than allowed,
//! and truncation all end the read with an error; the sink removes what it made.

mod extract;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::decompress::{decompressed, Compression};
use crate::{BackupError, Index, OptimizedHeader};

/// The largest `index.yaml` or `optimized_header.yaml` read.
const MAX_YAML: u64 = 16 << 20;

/// The error LXD gives for a tarball that does not start with its index.
pub const MISSING_INDEX: &str = "Backup is missing index.yaml";

/// Bounds on what a backup may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content (the logical size: a sparse file counts whole).
    pub max_bytes: u64,
}

/// One volume of the backup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Snapshot(String),
    Main,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Snapshot(s) => write!(f, "snapshot {s:?}"),
            Part::Main => f.write_str("the instance's volume"),
        }
    }
}

/// Where the reader puts what it reads. Called on the reader's thread, in stream order.
pub trait Sink {
    /// The index, before any volume: refuse it here (name taken, pool unknown, …), or
    /// give the most bytes the volumes may hold (the pool's free space).
    fn index(
        &mut self,
        index: &Index,
        header: Option<&OptimizedHeader>,
    ) -> Result<u64, BackupError>;
    /// The files of `part` follow: the directory (existing, empty) they are written into.
    fn open_volume(&mut self, part: &Part) -> Result<PathBuf, BackupError>;
    /// Every file of `part` is written.
    fn close_volume(&mut self, part: &Part) -> Result<(), BackupError>;
    /// The optimized stream of `part` (`btrfs send`), to be read to its end.
    fn receive(&mut self, part: &Part, stream: &mut dyn Read) -> Result<(), BackupError>;
}

/// What was read.
#[derive(Debug)]
pub struct Summary {
    pub index: Index,
    pub compression: Compression,
    pub optimized: bool,
    /// Bytes of file content written (or streamed to the receiver).
    pub bytes: u64,
}

/// Reads the backup in `stream` into `sink`.
pub fn read_backup(
    stream: impl Read + Send + 'static,
    sink: &mut dyn Sink,
    limits: Limits,
) -> Result<Summary, BackupError> {
    let (compression, reader) = decompressed(stream)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| BackupError::io("read", "the backup", e))?;
    let mut walk = Walk {
        sink,
        limits,
        index: None,
        header: None,
        optimized: None,
        current: None,
        done: Vec::new(),
        bytes: 0,
    };
    for entry in entries {
        // What is not a tarball at all has no index either (LXD's words for it).
        let entry = entry.map_err(|e| match walk.index {
            None => BackupError::Invalid(MISSING_INDEX.into()),
            Some(_) => corrupt(e),
        })?;
        walk.entry(entry)?;
    }
    let Some(index) = walk.index.take() else {
        return Err(BackupError::Invalid(MISSING_INDEX.into()));
    };
    walk.close_current()?;
    let seen: BTreeSet<&Part> = walk.done.iter().collect();
    for s in &index.snapshots {
        if !seen.contains(&Part::Snapshot(s.clone())) {
            return Err(BackupError::Invalid(format!(
                "the index lists snapshot {s:?} but the backup lacks it"
            )));
        }
    }
    if !seen.contains(&Part::Main) {
        return Err(BackupError::Invalid(
            "the backup holds no instance volume".into(),
        ));
    }
    Ok(Summary {
        optimized: walk.optimized.unwrap_or(false),
        index,
        compression,
        bytes: walk.bytes,
    })
}

fn corrupt(e: std::io::Error) -> BackupError {
    BackupError::Invalid(format!("corrupt or truncated tarball: {e}"))
}

/// What an entry's path names.
#[derive(Debug, PartialEq)]
enum Place {
    /// `backup/` itself, `backup/snapshots/`: nothing to write.
    Skip,
    Index,
    Header,
    /// A file of a volume, relative to the volume's directory (empty: the volume itself).
    File(Part, PathBuf),
    /// An optimized volume's stream.
    Stream(Part),
}

/// Plain relative components of `path` (`.` dropped), or an error naming it.
fn components(path: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(
                n.to_str()
                    .ok_or_else(|| {
                        BackupError::Invalid(format!("{} is not UTF-8", path.display()))
                    })?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(BackupError::Invalid(format!(
                    "{} climbs out of the backup",
                    path.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(BackupError::Invalid(format!(
                    "{} is an absolute path",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

fn place_of(path: &Path) -> Result<Place, BackupError> {
    let comps = components(path)?;
    let outside = || BackupError::Invalid(format!("unexpected entry {}", path.display()));
    let rest = |from: usize| comps[from..].iter().collect::<PathBuf>();
    match comps.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["backup"] | ["backup", "snapshots"] => Ok(Place::Skip),
        ["backup", "index.yaml"] => Ok(Place::Index),
        ["backup", "optimized_header.yaml"] => Ok(Place::Header),
        ["backup", "container.bin"] => Ok(Place::Stream(Part::Main)),
        ["backup", "container", ..] => Ok(Place::File(Part::Main, rest(2))),
        ["backup", "snapshots", s] if s.ends_with(".bin") => Ok(Place::Stream(Part::Snapshot(
            s.trim_end_matches(".bin").to_string(),
        ))),
        ["backup", "snapshots", s, ..] => Ok(Place::File(Part::Snapshot(s.to_string()), rest(3))),
        ["backup", other, ..]
            if other.starts_with("virtual-machine") || other.starts_with("volume") =>
        {
            Err(BackupError::Invalid(format!(
                "{} belongs to a virtual machine or custom volume backup (not supported)",
                path.display()
            )))
        }
        ["backup", other] if other.starts_with("container_") && other.ends_with(".bin") => {
            Err(BackupError::Invalid(
                "nested subvolumes in an optimized backup are not supported".into(),
            ))
        }
        _ => Err(outside()),
    }
}

/// The state of one read.
struct Walk<'s> {
    sink: &'s mut dyn Sink,
    limits: Limits,
    index: Option<Index>,
    header: Option<OptimizedHeader>,
    /// Told by the index, else by the first volume entry.
    optimized: Option<bool>,
    current: Option<(Part, extract::Volume)>,
    done: Vec<Part>,
    bytes: u64,
}

impl Walk<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<R>) -> Result<(), BackupError> {
        let path = entry
            .path()
            .map_err(|e| BackupError::Invalid(format!("bad path in the tarball: {e}")))?
            .into_owned();
        let place = place_of(&path)?;
        if self.index.is_none() {
            return match place {
                Place::Index => self.read_index(&mut entry),
                Place::Skip => Ok(()),
                _ => Err(BackupError::Invalid(MISSING_INDEX.into())),
            };
        }
        match place {
            Place::Skip => Ok(()),
            Place::Index => Err(BackupError::Invalid("a second backup/index.yaml".into())),
            Place::Header => {
                if self.current.is_some() || !self.done.is_empty() {
                    return Err(BackupError::Invalid(
                        "backup/optimized_header.yaml after the volumes".into(),
                    ));
                }
                let text = yaml_text(&mut entry, "backup/optimized_header.yaml")?;
                let header: OptimizedHeader =
                    serde_yaml::from_str(&text).map_err(|source| BackupError::Yaml {
                        what: "backup/optimized_header.yaml",
                        source,
                    })?;
                if let Some(s) = header.subvolumes.iter().find(|s| s.path != "/") {
                    return Err(BackupError::Invalid(format!(
                        "nested subvolume {:?} in an optimized backup is not supported",
                        s.path
                    )));
                }
                self.header = Some(header);
                Ok(())
            }
            Place::Stream(part) => {
                self.mode(true, &path)?;
                if !entry.header().entry_type().is_file() {
                    return Err(BackupError::Invalid(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                self.start(&part, false)?;
                self.count(entry.size())?;
                self.sink.receive(&part, &mut entry)?;
                // The receiver must have read it all: what is left would be lost.
                let mut rest = [0u8; 1];
                if entry.read(&mut rest).map_err(corrupt)? != 0 {
                    return Err(BackupError::Invalid(format!(
                        "{} was not read to its end",
                        path.display()
                    )));
                }
                self.done.push(part);
                Ok(())
            }
            Place::File(part, rel) => {
                self.mode(false, &path)?;
                self.start(&part, true)?;
                self.write(entry, &part, &rel)
            }
        }
    }

    fn read_index<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), BackupError> {
        let text = yaml_text(entry, "backup/index.yaml")?;
        let index = Index::from_yaml(&text)?;
        if !index.kind.is_empty() && index.kind != "container" {
            return Err(BackupError::Invalid(format!(
                "backups of type {:?} are not supported (hutch runs containers)",
                index.kind
            )));
        }
        let mut names = BTreeSet::new();
        for s in &index.snapshots {
            if s.is_empty() || s.contains('/') || s == "." || s == ".." || !names.insert(s) {
                return Err(BackupError::Invalid(format!(
                    "invalid snapshot name {s:?} in the index"
                )));
            }
        }
        self.optimized = index.optimized;
        let room = self.sink.index(&index, self.header.as_ref())?;
        self.limits.max_bytes = self.limits.max_bytes.min(room);
        self.index = Some(index);
        Ok(())
    }

    /// Checks an entry's kind (optimized stream or files) against the backup's.
    fn mode(&mut self, optimized: bool, path: &Path) -> Result<(), BackupError> {
        match self.optimized {
            None => {
                self.optimized = Some(optimized);
                Ok(())
            }
            Some(o) if o == optimized => Ok(()),
            Some(o) => Err(BackupError::Invalid(format!(
                "{} in {} backup",
                path.display(),
                if o { "an optimized" } else { "a non-optimized" }
            ))),
        }
    }

    /// Makes `part` the volume entries go to; each volume's entries come together, and
    /// only volumes the index lists.
    fn start(&mut self, part: &Part, files: bool) -> Result<(), BackupError> {
        if self.current.as_ref().is_some_and(|(p, _)| p == part) {
            return Ok(());
        }
        if let Part::Snapshot(s) = part {
            let listed = self
                .index
                .as_ref()
                .is_some_and(|i| i.snapshots.iter().any(|n| n == s));
            if !listed {
                return Err(BackupError::Invalid(format!(
                    "the backup holds snapshot {s:?}, which its index does not list"
                )));
            }
        }
        if self.done.contains(part) {
            return Err(BackupError::Invalid(format!(
                "the entries of {part} are not together"
            )));
        }
        if self.done.contains(&Part::Main) {
            return Err(BackupError::Invalid(format!(
                "{part} comes after the instance's volume"
            )));
        }
        self.close_current()?;
        if files {
            let dir = self.sink.open_volume(part)?;
            self.current = Some((part.clone(), extract::Volume::open(&dir)?));
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), BackupError> {
        if let Some((part, mut volume)) = self.current.take() {
            volume.finish()?;
            self.sink.close_volume(&part)?;
            self.done.push(part);
        }
        Ok(())
    }

    fn count(&mut self, size: u64) -> Result<(), BackupError> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.max_bytes {
            return Err(BackupError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn write<R: Read>(
        &mut self,
        mut entry: tar::Entry<R>,
        part: &Part,
        rel: &Path,
    ) -> Result<(), BackupError> {
        let header = entry.header();
        let kind = header.entry_type();
        let bad = |e: std::io::Error| BackupError::Invalid(format!("{}: {e}", rel.display()));
        let mut mode = header.mode().map_err(bad)?;
        // Set-id bits only inside the root filesystem, where ids are the container's.
        if !rel.starts_with("rootfs") {
            mode &= 0o1777;
        }
        let mut attrs = extract::Attrs {
            mode,
            uid: u32::try_from(header.uid().map_err(bad)?).map_err(|_| bad_id(rel))?,
            gid: u32::try_from(header.gid().map_err(bad)?).map_err(|_| bad_id(rel))?,
            mtime: i64::try_from(header.mtime().map_err(bad)?).unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    if extract::restorable_xattr(name) {
                        attrs
                            .xattrs
                            .push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        let Some((_, volume)) = self.current.as_mut() else {
            unreachable!("a volume is open for its files")
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => volume.dir(rel, &attrs),
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = entry.size();
                self.count(size)?;
                let Some((_, volume)) = self.current.as_mut() else {
                    unreachable!("a volume is open for its files")
                };
                volume.file(rel, &attrs, size, &mut entry)
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| BackupError::Invalid(format!("{}: no target", rel.display())))?
                    .into_owned();
                volume.symlink(rel, &target, &attrs)
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| BackupError::Invalid(format!("{}: no target", rel.display())))?
                    .into_owned();
                match place_of(&target)? {
                    Place::File(p, t) if &p == part && !t.as_os_str().is_empty() => {
                        volume.hard_link(rel, &t)
                    }
                    _ => Err(BackupError::Invalid(format!(
                        "{} is a hard link out of its volume ({})",
                        rel.display(),
                        target.display()
                    ))),
                }
            }
            T::Fifo => volume.fifo(rel, &attrs),
            T::Char | T::Block => Err(BackupError::Invalid(format!(
                "{} is a device node",
                rel.display()
            ))),
            other => Err(BackupError::Invalid(format!(
                "{}: unsupported entry type {other:?}",
                rel.display()
            ))),
        }
    }
}

fn bad_id(rel: &Path) -> BackupError {
    BackupError::Invalid(format!("{}: owner out of range", rel.display()))
}

fn yaml_text<R: Read>(entry: &mut tar::Entry<R>, what: &str) -> Result<String, BackupError> {
    if !entry.header().entry_type().is_file() || entry.size() > MAX_YAML {
        return Err(BackupError::Invalid(format!(
            "{what} is not a regular file of at most {MAX_YAML} bytes"
        )));
    }
    let mut text = String::new();
    entry
        .take(MAX_YAML)
        .read_to_string(&mut text)
        .map_err(|e| BackupError::Invalid(format!("{what}: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests;
