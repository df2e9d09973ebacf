//! The offline image builder behind `hutch image build`: a root filesystem (busybox from the
//! host's busybox-static, or Debian by debootstrap), the metadata the public images carry
//! (`os`, `release`, `architecture`, `variant`, `serial`, `description`) and their
//! `/etc/hostname` and `/etc/hosts` templates, packed as a split image: a metadata tarball
//! and a rootfs tarball, ready for `POST /1.0/images`.
//!
//! Everything runs on the host as root (file owners, device nodes, debootstrap's chroot);
//! no container is started.

mod busybox;
mod debian;
mod files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Serialize;

pub use debian::{configure_debian, DebianRelease};
pub use files::WorkDir;

/// Every builder error, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building images needs root (file owners, device nodes, debootstrap): run it as root")]
    NotRoot,
    #[error("{tool} is missing: apt-get install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        BuildError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// busybox-init from the host's static busybox.
    Busybox,
    /// Debian with systemd, by debootstrap.
    Debian(DebianRelease),
}

impl FromStr for Target {
    type Err = BuildError;

    /// `busybox`, `debian/12`, `debian/bookworm`.
    fn from_str(s: &str) -> Result<Self, BuildError> {
        match s.split_once('/') {
            None if s == "busybox" => Ok(Target::Busybox),
            Some(("debian", release)) => Ok(Target::Debian(release.parse()?)),
            _ => Err(BuildError::Invalid(format!(
                "unknown image {s:?}: the builder makes busybox and debian/<11|12|13>"
            ))),
        }
    }
}

/// The image variant, as the public images name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    #[default]
    Default,
    /// With cloud-init (Debian only).
    Cloud,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Cloud => "cloud",
        }
    }
}

impl FromStr for Variant {
    type Err = BuildError;

    fn from_str(s: &str) -> Result<Self, BuildError> {
        match s {
            "default" => Ok(Variant::Default),
            "cloud" => Ok(Variant::Cloud),
            other => Err(BuildError::Invalid(format!(
                "unknown variant {other:?} (default or cloud)"
            ))),
        }
    }
}

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub variant: Variant,
    /// Debian mirror; `http://deb.debian.org/debian` when empty.
    pub mirror: String,
    /// A directory caching debootstrap's result as `debian-<version>-<arch>.tar.{zst,gz}`
    /// (the test suite's `$HUTCH_TEST_CACHE` layout): used when there, written when not.
    pub debootstrap_cache: Option<PathBuf>,
    /// The version key; now (UTC) as `YYYYMMDD_HH:MM` when empty.
    pub serial: String,
    /// Where the work directory goes; the system's temporary directory when `None`.
    pub work_parent: Option<PathBuf>,
}

/// A built image: its two files (in a work directory removed on drop) and its properties.
#[derive(Debug)]
pub struct BuiltImage {
    pub meta: PathBuf,
    pub rootfs: PathBuf,
    pub properties: BTreeMap<String, String>,
    pub work: WorkDir,
}

/// One entry of metadata.yaml `templates`, in LXD's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    pub when: Vec<String>,
    pub create_only: bool,
    pub template: String,
    pub properties: BTreeMap<String, String>,
}

/// metadata.yaml as the builder writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildMetadata {
    pub architecture: String,
    pub creation_date: i64,
    pub properties: BTreeMap<String, String>,
    pub templates: BTreeMap<String, Template>,
}

/// The template files (name, content) the public images carry for `/etc/hostname` and
/// `/etc/hosts`, and their `templates` entries: rendered on create and copy.
pub fn standard_templates() -> (
    Vec<(&'static str, &'static str)>,
    BTreeMap<String, Template>,
) {
    let files = vec![
        ("hostname.tpl", "{{ container.name }}\n"),
        (
            "hosts.tpl",
            "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
        ),
    ];
    let entry = |template: &str| Template {
        when: vec!["create".into(), "copy".into()],
        create_only: false,
        template: template.into(),
        properties: BTreeMap::new(),
    };
    let templates = BTreeMap::from([
        ("/etc/hostname".to_string(), entry("hostname.tpl")),
        ("/etc/hosts".to_string(), entry("hosts.tpl")),
    ]);
    (files, templates)
}

/// The properties the public images carry, for `os`/`release` on this host's architecture.
pub fn image_properties(
    os: &str,
    release: &str,
    version: &str,
    variant: Variant,
    serial: &str,
) -> BTreeMap<String, String> {
    let arch = dpkg_architecture();
    let mut p = BTreeMap::from([
        ("os".to_string(), os.to_string()),
        ("release".to_string(), release.to_string()),
        ("architecture".to_string(), arch.clone()),
        ("variant".to_string(), variant.as_str().to_string()),
        ("serial".to_string(), serial.to_string()),
        (
            "description".to_string(),
            format!("{os} {release} {arch} ({serial})"),
        ),
    ]);
    if !version.is_empty() {
        p.insert("version".into(), version.into());
    }
    p
}

/// Errors unless running as root (checked before a long build's other steps).
pub fn require_root() -> Result<(), BuildError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(BuildError::NotRoot)
    }
}

/// Builds `target`. Needs root.
pub fn build(target: &Target, opts: &BuildOptions) -> Result<BuiltImage, BuildError> {
    require_root()?;
    if opts.variant == Variant::Cloud && *target == Target::Busybox {
        return Err(BuildError::Invalid(
            "busybox has no cloud variant (no cloud-init)".into(),
        ));
    }
    let serial = if opts.serial.is_empty() {
        files::serial_now()
    } else {
        opts.serial.clone()
    };
    let serial_ok = serial.len() >= 8
        && serial.as_bytes()[..8].iter().all(u8::is_ascii_digit)
        && !serial.contains(['/', ',', ' ']);
    if !serial_ok {
        return Err(BuildError::Invalid(format!(
            "serial {serial:?} must start with YYYYMMDD (e.g. 20240501_05:24)"
        )));
    }
    let parent = opts.work_parent.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir::new(&parent)?;
    let root = work.path().join("rootfs");
    let properties = match target {
        Target::Busybox => {
            let version = busybox::build_rootfs(&root)?;
            image_properties("busybox", &version, "", opts.variant, &serial)
        }
        Target::Debian(release) => {
            debian::build_rootfs(&root, release, opts, work.path())?;
            configure_debian(&root, opts.variant)?;
            image_properties(
                "Debian",
                release.codename(),
                release.version(),
                opts.variant,
                &serial,
            )
        }
    };
    let (files, templates) = standard_templates();
    let metadata = BuildMetadata {
        architecture: std::env::consts::ARCH.to_string(),
        creation_date: files::unix_now(),
        properties: properties.clone(),
        templates,
    };
    let meta = work.path().join("meta.tar.xz");
    files::write_meta_tarball(&meta, &metadata, &files)?;
    let rootfs = files::pack_rootfs(&root, work.path())?;
    files::remove_tree(&root)?;
    Ok(BuiltImage {
        meta,
        rootfs,
        properties,
        work,
    })
}

/// The host's architecture as Debian (and the public image servers) name it.
pub fn dpkg_architecture() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
    .to_string()
}

/// Runs a command to completion; its stderr's tail goes into the error.
fn run(cmd: &mut Command, what: &str) -> Result<(), BuildError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| BuildError::Command {
            what: what.to_string(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(BuildError::Command {
            what: what.to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// Errors unless `tool` is on the PATH.
fn require_tool(tool: &'static str, package: &'static str) -> Result<(), BuildError> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    if found {
        Ok(())
    } else {
        Err(BuildError::MissingTool { tool, package })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_variants_parse() {
        assert_eq!("busybox".parse::<Target>().unwrap(), Target::Busybox);
        assert_eq!(
            "debian/12".parse::<Target>().unwrap(),
            Target::Debian("bookworm".parse().unwrap())
        );
        assert_eq!(
            "debian/bookworm".parse::<Target>().unwrap(),
            "debian/12".parse::<Target>().unwrap()
        );
        for bad in ["debian/9", "ubuntu/24.04", "debian", "", "busybox/1"] {
            let err = bad.parse::<Target>().unwrap_err().to_string();
            assert!(
                err.contains("unknown") || err.contains("release"),
                "{bad}: {err}"
            );
        }
        assert_eq!("cloud".parse::<Variant>().unwrap(), Variant::Cloud);
        assert!("desktop".parse::<Variant>().is_err());
    }

    #[test]
    fn metadata_carries_the_public_images_properties_and_templates() {
        let props = image_properties(
            "Debian",
            "bookworm",
            "12",
            Variant::Default,
            "20240501_05:24",
        );
        let arch = dpkg_architecture();
        assert_eq!(props["os"], "Debian");
        assert_eq!(props["release"], "bookworm");
        assert_eq!(props["version"], "12");
        assert_eq!(props["variant"], "default");
        assert_eq!(props["serial"], "20240501_05:24");
        assert_eq!(props["architecture"], arch);
        assert_eq!(
            props["description"],
            format!("Debian bookworm {arch} (20240501_05:24)")
        );
        let (files, templates) = standard_templates();
        let meta = BuildMetadata {
            architecture: "x86_64".into(),
            creation_date: 1714541040,
            properties: props,
            templates,
        };
        let yaml = serde_yaml::to_string(&meta).unwrap();
        let back: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let hostname = &back["templates"]["/etc/hostname"];
        assert_eq!(hostname["template"], "hostname.tpl");
        assert_eq!(
            hostname["when"],
            serde_yaml::from_str::<serde_yaml::Value>("[create, copy]").unwrap()
        );
        assert_eq!(hostname["create_only"], false);
        assert_eq!(back["templates"]["/etc/hosts"]["template"], "hosts.tpl");
        // The image store's parser reads it.
        let parsed = crate::ImageMetadata::parse(&yaml).unwrap();
        assert_eq!(parsed.properties["serial"], "20240501_05:24");
        assert_eq!(files[0], ("hostname.tpl", "{{ container.name }}\n"));
        assert!(files[1].1.starts_with("127.0.1.1\t{{ container.name }}\n"));
    }
}
