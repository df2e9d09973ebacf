//! An instance of an OCI image runs the image's process as its init: Entrypoint + Cmd
//! (or `oci.entrypoint`), its Env under `environment.*`, in its WorkingDir (or
//! `oci.cwd`), as its User resolved in the instance's own /etc/passwd (or `oci.uid` /
//! `oci.gid`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hutch_runtime::{ContainerSpec, InitUser};

use super::properties::TYPE_OCI;
use crate::error::{DaemonError, Result};

/// How long a stop without a timeout waits for an application's process to end on
/// SIGTERM before it is killed (as docker's default): a shell as PID 1 ignores it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The PATH a process gets when its image names none (as docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether an instance's config says it was made from an OCI image.
pub fn is_oci(config: &BTreeMap<String, String>) -> bool {
    config.get("image.type").map(String::as_str) == Some(TYPE_OCI)
}

fn bad(msg: String) -> DaemonError {
    DaemonError::BadRequest(msg)
}

/// A JSON list of strings from config key `key` (empty when unset).
fn json_list(config: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>> {
    match config.get(key).filter(|v| !v.is_empty()) {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_str(v).map_err(|e| bad(format!("{key}: {e}"))),
    }
}

/// `oci.entrypoint`: a JSON list, or words split on whitespace.
fn parse_command(v: &str) -> Result<Vec<String>> {
    if v.trim_start().starts_with('[') {
        serde_json::from_str(v).map_err(|e| bad(format!("oci.entrypoint: {e}")))
    } else {
        Ok(v.split_whitespace().map(str::to_string).collect())
    }
}

/// What the process of an OCI instance is: command, environment, directory and ids.
#[derive(Debug, PartialEq, Eq)]
struct Process {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    user: Option<InitUser>,
}

/// Works out the process from the expanded `config` and the instance's `rootfs` (for the
/// user's ids and the command's place on PATH).
fn process(config: &BTreeMap<String, String>, rootfs: &Path) -> Result<Process> {
    let mut command = match config.get("oci.entrypoint").filter(|v| !v.is_empty()) {
        Some(v) => parse_command(v)?,
        None => {
            let mut c = json_list(config, "image.oci.entrypoint")?;
            c.extend(json_list(config, "image.oci.cmd")?);
            c
        }
    };
    if command.is_empty() {
        return Err(bad(
            "the OCI image names no command to run: set oci.entrypoint".into(),
        ));
    }
    // The image's Env, then environment.* keys over it.
    let mut env = BTreeMap::new();
    for entry in json_list(config, "image.oci.env")? {
        if let Some((k, v)) = entry.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in config {
        if let Some(var) = k.strip_prefix("environment.") {
            env.insert(var.to_string(), v.clone());
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    if !command[0].contains('/') {
        command[0] = find_in_path(rootfs, &command[0], &env["PATH"])
            .ok_or_else(|| bad(format!("{:?} is not on the image's PATH", command[0])))?;
    }
    let cwd = config
        .get("oci.cwd")
        .or_else(|| config.get("image.oci.cwd"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (mut uid, mut gid) = match config.get("image.oci.user").filter(|u| !u.is_empty()) {
        Some(user) => hutch_oci::resolve_user(rootfs, user).map_err(|e| bad(crate::chain(&e)))?,
        None => (0, 0),
    };
    let id = |key: &str| -> Result<Option<u32>> {
        config
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| bad(format!("{key}: not a number"))))
            .transpose()
    };
    if let Some(u) = id("oci.uid")? {
        uid = u;
    }
    if let Some(g) = id("oci.gid")? {
        gid = g;
    }
    let user = (uid != 0 || gid != 0).then_some(InitUser { uid, gid });
    Ok(Process {
        command,
        env,
        cwd,
        user,
    })
}

/// The first `dir/name` on `path` that exists in the root filesystem, symlinks resolved
/// inside it (`openat2(RESOLVE_IN_ROOT)`: the image's links never lead to the host's).
fn find_in_path(rootfs: &Path, name: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(rootfs)
        .ok()?;
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
        .find(|p| crate::engine::files::open_in_root(&root, p, libc::O_PATH, 0).is_ok())
}

/// Process managers written to be PID 1 (they reap orphans and pass signals on
/// themselves), by the file name an image's command names them with.
const OWN_INITS: &[&str] = &[
    "tini",
    "tini-static",
    "dumb-init",
    "catatonit",
    "docker-init",
    "s6-svscan",
    "runit",
    "runit-init",
    "openrc-init",
    "systemd",
    // /sbin/init, and s6-overlay's /init.
    "init",
];

/// Whether `command` starts with an init of the image's own (then ours is not put in
/// front of it).
fn brings_own_init(command: &[String]) -> bool {
    command
        .first()
        .and_then(|c| c.rsplit('/').next())
        .is_some_and(|name| OWN_INITS.contains(&name))
}

/// Makes `spec` (of an instance with `config`) run the OCI image's process, stopped by
/// SIGTERM; under our reaper as PID 1 unless the image brings an init of its own.
pub fn apply_to_spec(spec: &mut ContainerSpec, config: &BTreeMap<String, String>) -> Result<()> {
    let p = process(config, &spec.rootfs)?;
    spec.reaper = !brings_own_init(&p.command);
    spec.init = p.command;
    spec.env = p.env;
    spec.init_cwd = p.cwd;
    spec.init_user = p.user;
    spec.halt_signal = Some(libc::SIGTERM);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/app"), b"").unwrap();
        // A link that would lead to the host's /bin: not followed out of the root.
        std::os::unix::fs::symlink("/../../../../bin", dir.path().join("hostbin")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        dir
    }

    fn image() -> Vec<(&'static str, &'static str)> {
        vec![
            ("image.type", "oci"),
            ("image.oci.entrypoint", r#"["app","-v"]"#),
            ("image.oci.cmd", r#"["serve"]"#),
            ("image.oci.env", r#"["A=1","B=2"]"#),
            ("image.oci.cwd", "/srv"),
            ("image.oci.user", "app"),
        ]
    }

    #[test]
    fn the_image_config_makes_the_process() {
        let root = rootfs();
        let mut c = image();
        c.push(("environment.B", "over"));
        let p = process(&cfg(&c), root.path()).unwrap();
        assert_eq!(p.command, vec!["/bin/app", "-v", "serve"]);
        assert_eq!(p.env["A"], "1");
        assert_eq!(p.env["B"], "over");
        assert_eq!(p.env["PATH"], DEFAULT_PATH);
        assert_eq!(p.cwd, Some(PathBuf::from("/srv")));
        assert_eq!(
            p.user,
            Some(InitUser {
                uid: 1000,
                gid: 1001
            })
        );
    }

    #[test]
    fn commands_are_found_on_path_inside_the_root_only() {
        let root = rootfs();
        assert_eq!(
            find_in_path(root.path(), "app", "/nope:/bin"),
            Some("/bin/app".into())
        );
        // /bin/sh exists on the host, not in this root.
        assert_eq!(find_in_path(root.path(), "sh", "/hostbin:/bin"), None);
        // The link resolves to the root's own /bin.
        assert_eq!(
            find_in_path(root.path(), "app", "/hostbin"),
            Some("/hostbin/app".into())
        );
    }

    #[test]
    fn oci_keys_override_the_image() {
        let root = rootfs();
        let mut c = image();
        c.extend([
            ("oci.entrypoint", "/bin/sh -c true"),
            ("oci.cwd", "/tmp"),
            ("oci.uid", "0"),
            ("oci.gid", "0"),
        ]);
        let p = process(&cfg(&c), root.path()).unwrap();
        assert_eq!(p.command, vec!["/bin/sh", "-c", "true"]);
        assert_eq!(p.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(p.user, None);
        let c = cfg(&[
            ("image.type", "oci"),
            ("oci.entrypoint", r#"["/x", "a b"]"#),
        ]);
        assert_eq!(process(&c, root.path()).unwrap().command, vec!["/x", "a b"]);
    }

    #[test]
    fn an_image_with_its_own_init_runs_it_as_pid_1() {
        let own =
            |c: &[&str]| brings_own_init(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(own(&["/sbin/tini", "--", "nginx"]));
        assert!(own(&["/usr/bin/dumb-init", "app"]));
        assert!(own(&["/init"]));
        assert!(own(&["/lib/systemd/systemd"]));
        assert!(!own(&["/usr/sbin/nginx", "-g", "daemon off;"]));
        assert!(!own(&["/bin/initialise"]));
        assert!(!own(&[]));
    }

    #[test]
    fn no_command_or_unknown_user_is_refused() {
        let root = rootfs();
        assert!(process(&cfg(&[("image.type", "oci")]), root.path()).is_err());
        let c = cfg(&[
            ("image.oci.entrypoint", r#"["/bin/app"]"#),
            ("image.oci.user", "nobody"),
        ]);
        let err = process(&c, root.path()).unwrap_err().to_string();
        assert!(err.contains("nobody"), "{err}");
        assert!(is_oci(&cfg(&[("image.type", "oci")])));
        assert!(!is_oci(&cfg(&[("image.os", "busybox")])));
    }
}
