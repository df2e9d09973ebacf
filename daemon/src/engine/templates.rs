//! Image templates applied as LXD applies them: an instance made from an image, copied or
//! renamed records the trigger in `volatile.apply_template`; at the next start, before init
//! runs, the templates of its `metadata.yaml` whose `when` holds that trigger (and the
//! `start` ones, at every start) are rendered into its root filesystem, then the key goes.
//! The root filesystem is the container's: every path is resolved inside it with
//! `openat2(RESOLVE_IN_ROOT)`, so no symlink leads out, and only regular files are written.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use hutch_images::template::{CompiledTemplate, Context, InstanceInfo, TemplateLimits};
use hutch_images::ImageMetadata;
use nix::errno::Errno;

use super::files::open_in_root;
use super::spec::{flag, Expanded};
use super::{blocking, Engine};
use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// The config key that holds the pending trigger (`create`, `copy` or `rename`).
pub const APPLY_KEY: &str = "volatile.apply_template";

/// Largest metadata.yaml and template file read from an instance volume.
const MAX_READ: u64 = 1 << 20;
/// Most templates one trigger renders (public images have about ten), and most bytes they
/// write together: an image is hostile input, and this work runs at every start.
const MAX_TEMPLATES: usize = 1024;
const MAX_TOTAL_OUTPUT: usize = 64 << 20;

/// Records that the templates for `trigger` are due at the next start (LXD's
/// `DeferTemplateApply`).
pub fn defer(d: &Daemon, name: &str, trigger: &str) -> Result<()> {
    d.db.set_instance_config_key(name, APPLY_KEY, Some(trigger))
}

/// At start, before init runs: renders the templates of the pending trigger, clears it,
/// then renders the `start` templates.
pub fn apply_due(d: &Daemon, row: &InstanceRow, expanded: &Expanded) -> Result<()> {
    let volume = d.instance_volume(&row.name)?;
    let Some(meta) = read_metadata(&volume)? else {
        // Not from an image with metadata (or made before volumes kept it): nothing to do,
        // but a pending trigger is still spent, as LXD spends it.
        if row.config.contains_key(APPLY_KEY) {
            d.db.set_instance_config_key(&row.name, APPLY_KEY, None)?;
        }
        return Ok(());
    };
    let rootfs = volume.join("rootfs");
    let target = Target {
        volume: &volume,
        meta: &meta,
        owner: root_owner(d, row, expanded, &rootfs)?,
        instance: InstanceInfo {
            name: row.name.clone(),
            architecture: row.architecture.clone(),
            privileged: flag(&expanded.config, "security.privileged"),
            ephemeral: row.ephemeral,
        },
        expanded,
    };
    if let Some(trigger) = row.config.get(APPLY_KEY).filter(|t| !t.is_empty()) {
        target.apply(trigger)?;
        d.db.set_instance_config_key(&row.name, APPLY_KEY, None)?;
    }
    target.apply("start")
}

/// The templates of the volume holding `rootfs` (an instance's or a snapshot's), for an
/// image published from it; none when it has no readable metadata.yaml.
pub fn volume_templates(
    rootfs: &Path,
) -> std::collections::BTreeMap<String, hutch_images::Template> {
    rootfs
        .parent()
        .and_then(|volume| read_metadata(volume).ok().flatten())
        .map(|meta| meta.templates)
        .unwrap_or_default()
}

/// The instance volume's metadata.yaml (kept there from its image), if any.
fn read_metadata(volume: &Path) -> Result<Option<ImageMetadata>> {
    let path = volume.join("metadata.yaml");
    let Some(text) = read_plain(&path)? else {
        return Ok(None);
    };
    let meta: ImageMetadata = serde_yaml::from_str(&text).map_err(|e| {
        DaemonError::failed(
            "parse",
            path.display(),
            hutch_images::ImageError::Invalid(format!("metadata.yaml: {e}")),
        )
    })?;
    Ok(Some(meta))
}

/// A regular file of the instance volume (outside the rootfs, so written only by the
/// daemon), read up to [`MAX_READ`] bytes; `None` when missing.
fn read_plain(path: &Path) -> Result<Option<String>> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DaemonError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| DaemonError::io("stat", path, e))?;
    if !meta.is_file() || meta.len() > MAX_READ {
        return Err(DaemonError::BadRequest(format!(
            "{}: not a regular file of at most {MAX_READ} bytes",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(MAX_READ)
        .read_to_string(&mut text)
        .map_err(|e| DaemonError::io("read", path, e))?;
    Ok(Some(text))
}

/// Who owns a new file as the container's root: uid/gid 0 on a tree presented through an
/// idmapped mount (or privileged), the mapped host ids on a tree shifted once instead.
fn root_owner(
    d: &Daemon,
    row: &InstanceRow,
    expanded: &Expanded,
    rootfs: &Path,
) -> Result<(u32, u32)> {
    if !is_shifted(rootfs) {
        return Ok((0, 0));
    }
    match super::idmaps::instance_idmap(d, row, expanded)? {
        Some(map) => Ok((map.host_uid(0).unwrap_or(0), map.host_gid(0).unwrap_or(0))),
        None => Ok((0, 0)),
    }
}

fn is_shifted(rootfs: &Path) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(rootfs.as_os_str().as_encoded_bytes()),
        CString::new(hutch_runtime::userns::SHIFTED_XATTR),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and live across the call; a null buffer of
    // size 0 asks only for the value's size.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    n >= 0
}

impl Engine {
    /// The instance's metadata.yaml in LXD's JSON shape (`GET
    /// /1.0/instances/<name>/metadata`); empty fields when it has none, as LXD answers.
    pub async fn instance_metadata(&self, name: &str) -> Result<serde_json::Value> {
        self.d.db.instance_or_404(name)?;
        let volume = self.d.instance_volume(name)?;
        let meta = blocking(move || read_metadata(&volume))
            .await?
            .unwrap_or_default();
        Ok(serde_json::json!({
            "architecture": meta.architecture,
            "creation_date": meta.creation_date,
            "expiry_date": meta.expiry_date,
            "properties": meta.properties,
            "templates": meta.templates,
        }))
    }

    /// The names of the files in the instance's templates/ (`GET .../metadata/templates`).
    pub async fn instance_template_names(&self, name: &str) -> Result<Vec<String>> {
        self.d.db.instance_or_404(name)?;
        let dir = self.d.instance_volume(name)?.join("templates");
        blocking(move || {
            let mut names: Vec<String> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(DaemonError::io("read", &dir, e)),
            };
            names.sort();
            Ok(names)
        })
        .await
    }

    /// Where template `file` of instance `name` lives; LXD takes a bare file name.
    fn template_path(&self, name: &str, file: &str) -> Result<PathBuf> {
        self.d.db.instance_or_404(name)?;
        if file.is_empty() || file.contains(['/', '\0']) || file == "." || file == ".." {
            return Err(DaemonError::BadRequest("Invalid template filename".into()));
        }
        Ok(self.d.instance_volume(name)?.join("templates").join(file))
    }

    /// One template file's text (`GET .../metadata/templates?path=<file>`).
    pub async fn instance_template(&self, name: &str, file: &str) -> Result<Vec<u8>> {
        let path = self.template_path(name, file)?;
        let file = file.to_string();
        blocking(move || match read_plain(&path)? {
            Some(text) => Ok(text.into_bytes()),
            None => Err(DaemonError::NotFound(format!(
                "Template {file:?} not found"
            ))),
        })
        .await
    }
}

impl Engine {
    /// Replaces the instance's metadata.yaml (`PUT .../metadata`, a JSON body in LXD's
    /// shape).
    pub async fn set_instance_metadata(&self, name: &str, meta: ImageMetadata) -> Result<()> {
        self.d.db.instance_or_404(name)?;
        let lock = self.d.instance_lock(name);
        let _g = lock.lock().await;
        let path = self.d.instance_volume(name)?.join("metadata.yaml");
        let yaml = serde_yaml::to_string(&meta).map_err(|e| {
            DaemonError::failed(
                "write",
                path.display(),
                hutch_images::ImageError::Invalid(format!("metadata.yaml: {e}")),
            )
        })?;
        blocking(move || replace_file(&path, yaml.as_bytes())).await
    }

    /// Creates or replaces template `file` (`POST`/`PUT .../metadata/templates?path=`).
    pub async fn set_instance_template(&self, name: &str, file: &str, data: Vec<u8>) -> Result<()> {
        let path = self.template_path(name, file)?;
        if data.len() as u64 > MAX_READ {
            return Err(DaemonError::BadRequest(format!(
                "A template may hold at most {MAX_READ} bytes"
            )));
        }
        let lock = self.d.instance_lock(name);
        let _g = lock.lock().await;
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| DaemonError::io("create", dir, e))?;
            }
            replace_file(&path, &data)
        })
        .await
    }

    /// Removes template `file` (`DELETE .../metadata/templates?path=`).
    pub async fn delete_instance_template(&self, name: &str, file: &str) -> Result<()> {
        let path = self.template_path(name, file)?;
        let file = file.to_string();
        let lock = self.d.instance_lock(name);
        let _g = lock.lock().await;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DaemonError::NotFound(
                format!("Template {file:?} not found"),
            )),
            Err(e) => Err(DaemonError::io("remove", &path, e)),
        })
        .await
    }
}

/// Writes a file of the instance volume whole: a temporary name, then a rename.
fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DaemonError::io("write", path, e)
    })
}

/// What rendering needs about one instance.
struct Target<'a> {
    volume: &'a Path,
    meta: &'a ImageMetadata,
    owner: (u32, u32),
    instance: InstanceInfo,
    expanded: &'a Expanded,
}

impl Target<'_> {
    /// Renders every template whose `when` holds `trigger`.
    fn apply(&self, trigger: &str) -> Result<()> {
        let due: Vec<_> = self
            .meta
            .templates
            .iter()
            .filter(|(_, t)| t.when.iter().any(|w| w == trigger))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        if due.len() > MAX_TEMPLATES {
            return Err(DaemonError::BadRequest(format!(
                "The image has more than {MAX_TEMPLATES} templates for {trigger}"
            )));
        }
        let root = open_dir(&self.volume.join("rootfs"))?;
        // One budget for all the files a trigger renders, not one per file.
        let mut output_left = MAX_TOTAL_OUTPUT;
        for (path, template) in due {
            let rel = rootfs_relative(path)?;
            if template.create_only && exists(&root, &rel) {
                continue;
            }
            let text = self.render(trigger, path, output_left, template)?;
            output_left -= text.len();
            write_file(&root, path, &rel, text.as_bytes(), self.owner)?;
        }
        Ok(())
    }

    fn render(
        &self,
        trigger: &str,
        path: &str,
        max_output: usize,
        template: &hutch_images::Template,
    ) -> Result<String> {
        let name = plain_name(&template.template).ok_or_else(|| {
            DaemonError::BadRequest(format!(
                "template {:?} for {path} is not a file name in templates/",
                template.template
            ))
        })?;
        let file = self.volume.join("templates").join(name);
        let source = read_plain(&file)?.ok_or_else(|| {
            DaemonError::BadRequest(format!(
                "template {:?} for {path} is missing from the image",
                template.template
            ))
        })?;
        let ctx = Context::lxd(
            trigger,
            path,
            &self.instance,
            &self.expanded.config,
            &self.expanded.devices,
            &template.properties,
        );
        let limits = TemplateLimits {
            max_output,
            ..TemplateLimits::default()
        };
        CompiledTemplate::parse(&source, limits)
            .and_then(|t| t.render(&ctx, limits))
            .map_err(|e| DaemonError::failed("render template", &template.template, e))
    }
}

/// A template's name below templates/: plain components only.
fn plain_name(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    (!name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_))))
        .then(|| p.to_path_buf())
}

/// A template's target made relative to the root (LXD joins even a relative one to the
/// root; `..` stays inside it anyway, by `RESOLVE_IN_ROOT`).
fn rootfs_relative(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.contains('\0') {
        return Err(DaemonError::BadRequest(format!(
            "template path {path:?} is not a file path"
        )));
    }
    Ok(rel.to_string())
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| DaemonError::io("open", dir, e))?;
    Ok(f.into())
}

/// Whether something is at `rel` (following symlinks inside the root, as LXD's check
/// follows them).
fn exists(root: &OwnedFd, rel: &str) -> bool {
    open_in_root(root, rel, libc::O_PATH, 0).is_ok()
}

fn errno_error(path: &str, action: &'static str, e: Errno) -> DaemonError {
    match e {
        Errno::EXDEV | Errno::ELOOP => {
            DaemonError::BadRequest(format!("{path}: leads outside the instance"))
        }
        other => DaemonError::failed(action, path, std::io::Error::from(other)),
    }
}

/// Writes `data` to `rel` in the root: an existing regular file is truncated and keeps its
/// owner and mode; a new one (and any missing parent directory) belongs to the container's
/// root, 0644 (0755 for directories). Anything but a regular file is refused.
fn write_file(root: &OwnedFd, path: &str, rel: &str, data: &[u8], owner: (u32, u32)) -> Result<()> {
    let (fd, created) = match open_in_root(root, rel, libc::O_PATH, 0) {
        Ok(fd) => (fd, false),
        Err(Errno::ENOENT) => {
            make_parents(root, path, rel, owner)?;
            // Without O_EXCL a dangling symlink is followed, and its target made, inside
            // the root. O_NONBLOCK: a FIFO put there meanwhile cannot hang the daemon.
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK | libc::O_NOCTTY;
            let fd = open_in_root(root, rel, flags, 0o644)
                .map_err(|e| errno_error(path, "create", e))?;
            (fd, true)
        }
        Err(e) => return Err(errno_error(path, "open", e)),
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| errno_error(path, "stat", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(DaemonError::BadRequest(format!(
            "{path}: is not a regular file in the instance"
        )));
    }
    // /proc/self/fd/N of an fd is that very inode: nothing can be swapped in.
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut file = File::options()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&proc)
        .map_err(|e| DaemonError::io("reopen", path, e))?;
    if created {
        set_owner(&file, path, owner, 0o644)?;
    }
    file.write_all(data)
        .map_err(|e| DaemonError::io("write", path, e))
}

fn set_owner<F: AsRawFd>(file: &F, path: &str, (uid, gid): (u32, u32), mode: u32) -> Result<()> {
    nix::unistd::fchown(file.as_raw_fd(), Some(uid.into()), Some(gid.into()))
        .map_err(|e| errno_error(path, "chown", e))?;
    nix::sys::stat::fchmod(
        file.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
    .map_err(|e| errno_error(path, "chmod", e))
}

/// Makes the missing directories above `rel`, owned by the container's root, 0755.
fn make_parents(root: &OwnedFd, path: &str, rel: &str, owner: (u32, u32)) -> Result<()> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut dir = String::from(".");
    for part in &parts[..parts.len().saturating_sub(1)] {
        let next = format!("{dir}/{part}");
        match open_in_root(root, &next, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let parent = open_in_root(root, &dir, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| errno_error(path, "open", e))?;
                nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    *part,
                    nix::sys::stat::Mode::from_bits_truncate(0o755),
                )
                .map_err(|e| errno_error(path, "create a directory for", e))?;
                let made = open_in_root(
                    root,
                    &next,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| errno_error(path, "open", e))?;
                set_owner(&made, path, owner, 0o755)?;
            }
            Err(e) => return Err(errno_error(path, "open", e)),
        }
        dir = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn root(dir: &Path) -> OwnedFd {
        open_dir(dir).unwrap()
    }

    #[test]
    fn new_files_and_parents_are_made_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let fd = root(t.path());
        write_file(
            &fd,
            "/etc/new/deep/file",
            "etc/new/deep/file",
            b"hi\n",
            (0, 0),
        )
        .unwrap();
        let f = t.path().join("etc/new/deep/file");
        assert_eq!(std::fs::read(&f).unwrap(), b"hi\n");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let dir = std::fs::metadata(t.path().join("etc/new")).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o755);
        // An existing file is truncated and keeps its mode.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_file(&fd, "/etc/new/deep/file", "etc/new/deep/file", b"x", (0, 0)).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(exists(&fd, "etc/new/deep/file"));
        assert!(!exists(&fd, "etc/none"));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        let target = outside.path().join("victim");
        // An absolute symlink, one climbing out with `..`, and a directory symlink.
        std::os::unix::fs::symlink(&target, t.path().join("etc/abs")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../../../..{}", target.display()),
            t.path().join("etc/rel"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("dirlink")).unwrap();
        let fd = root(t.path());
        // Where they point inside the root does not exist: refused, nothing made outside.
        for rel in ["etc/abs", "etc/rel", "dirlink/victim"] {
            assert!(write_file(&fd, rel, rel, b"x", (0, 0)).is_err(), "{rel}");
        }
        assert!(!target.exists(), "a write escaped the root");
        // Where it does, they land there, inside the root.
        let inside = t.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        for rel in ["etc/abs", "etc/rel", "dirlink/victim"] {
            write_file(&fd, rel, rel, b"contained\n", (0, 0)).unwrap();
        }
        assert!(!target.exists(), "a write escaped the root");
        assert_eq!(
            std::fs::read(inside.join("victim")).unwrap(),
            b"contained\n"
        );
    }

    #[test]
    fn only_regular_files_are_written() {
        let t = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &t.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::create_dir(t.path().join("dir")).unwrap();
        let fd = root(t.path());
        for rel in ["fifo", "dir"] {
            let err = write_file(&fd, rel, rel, b"x", (0, 0)).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    #[test]
    fn owners_follow_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let fd = root(t.path());
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping owners_follow_the_tree: needs root to chown");
            return;
        }
        write_file(&fd, "/a/b", "a/b", b"x", (1000, 1001)).unwrap();
        let m = std::fs::metadata(t.path().join("a/b")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
        let m = std::fs::metadata(t.path().join("a")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
        assert!(!is_shifted(t.path()));
    }

    #[test]
    fn names_and_paths_are_checked() {
        assert!(plain_name("hostname.tpl").is_some());
        assert!(plain_name("sub/x.tpl").is_some());
        for bad in ["", "../x", "/etc/shadow", "a/../../b"] {
            assert!(plain_name(bad).is_none(), "{bad}");
        }
        assert_eq!(rootfs_relative("/etc/hostname").unwrap(), "etc/hostname");
        assert_eq!(rootfs_relative("etc/hostname").unwrap(), "etc/hostname");
        for bad in ["", "/", "//", "/a\0b"] {
            assert!(rootfs_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_trigger_renders_its_templates_into_the_rootfs() {
        let vol = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(vol.path().join("rootfs/etc")).unwrap();
        std::fs::create_dir(vol.path().join("templates")).unwrap();
        std::fs::write(
            vol.path().join("templates/name.tpl"),
            "{{ container.name }} {{ trigger }} {{ config_get(\"user.x\", \"none\") }}\n",
        )
        .unwrap();
        std::fs::write(vol.path().join("rootfs/etc/kept"), "mine").unwrap();
        let meta = ImageMetadata::parse(
            "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/a:\n    when: [create]\n    template: name.tpl\n  /etc/kept:\n    when: [create]\n    create_only: true\n    template: name.tpl\n  /etc/later:\n    when: [start]\n    template: name.tpl\n",
        )
        .unwrap();
        let expanded = Expanded {
            config: [("user.x".to_string(), "1\n".to_string())].into(),
            ..Default::default()
        };
        let target = Target {
            volume: vol.path(),
            meta: &meta,
            // The current user's ids, so the test needs no root to chown.
            owner: (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
            instance: InstanceInfo {
                name: "c1".into(),
                architecture: "x86_64".into(),
                privileged: false,
                ephemeral: false,
            },
            expanded: &expanded,
        };
        target.apply("create").unwrap();
        let etc = vol.path().join("rootfs/etc");
        assert_eq!(
            std::fs::read_to_string(etc.join("a")).unwrap(),
            "c1 create 1\n"
        );
        assert_eq!(std::fs::read_to_string(etc.join("kept")).unwrap(), "mine");
        assert!(!etc.join("later").exists());
        target.apply("start").unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("later")).unwrap(),
            "c1 start 1\n"
        );
        // A template file the image lacks fails the trigger, naming it.
        let meta = ImageMetadata::parse(
            "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/b:\n    when: [copy]\n    template: gone.tpl\n",
        )
        .unwrap();
        let target = Target {
            meta: &meta,
            ..target
        };
        let err = target.apply("copy").unwrap_err();
        assert!(err.to_string().contains("gone.tpl"), "{err}");
    }

    #[test]
    fn metadata_is_read_from_the_volume() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_metadata(t.path()).unwrap().is_none());
        std::fs::write(
            t.path().join("metadata.yaml"),
            "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hostname:\n    when: [create]\n    template: hostname.tpl\n",
        )
        .unwrap();
        let meta = read_metadata(t.path()).unwrap().unwrap();
        assert_eq!(meta.templates["/etc/hostname"].when, ["create"]);
        std::fs::write(t.path().join("metadata.yaml"), ": : :").unwrap();
        assert!(read_metadata(t.path()).is_err());
    }
}
