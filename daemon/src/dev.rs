//! `hutchd container ...`: start, exec, stop and inspect one container straight through
//! the runtime. A developer tool until the REST API exists.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use hutch_runtime::{container, ContainerSpec, ExecRequest, ExecStdio, IdMap, Limits, Status};

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Boot a container from a root filesystem directory; prints init's host pid.
    Start {
        name: String,
        #[arg(long)]
        rootfs: PathBuf,
        /// Run without a user namespace.
        #[arg(long)]
        privileged: bool,
        /// Memory limit in bytes.
        #[arg(long)]
        memory: Option<u64>,
    },
    /// Run a command inside a running container; exits with its exit code.
    Exec {
        name: String,
        #[arg(long, default_value_t = 0)]
        uid: u32,
        #[arg(long, default_value_t = 0)]
        gid: u32,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a container (clean halt, killed after the timeout).
    Stop {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the container's state as JSON.
    State { name: String },
}

fn runtime_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("containers").join(name)
}

/// The cgroup path the daemon would give this container.
fn cgroup_path(dir: &Path, name: &str) -> String {
    format!("{}/{name}", crate::daemon::cgroup_prefix(dir))
}

pub fn run(dir: &Path, cmd: ContainerCommand) -> anyhow::Result<i32> {
    let hutchd = std::env::current_exe().context("find the hutchd binary")?;
    crate::layout::check_helper(&hutchd)?;
    let helper = crate::layout::helper_beside(&hutchd);
    match cmd {
        ContainerCommand::Start {
            name,
            rootfs,
            privileged,
            memory,
        } => {
            let idmap = if privileged {
                None
            } else {
                Some(IdMap::for_root(Path::new("/etc"))?)
            };
            let rootfs = std::fs::canonicalize(&rootfs)
                .with_context(|| format!("open {}", rootfs.display()))?;
            let mut spec = ContainerSpec::new(&name, rootfs, idmap, &cgroup_path(dir, &name));
            spec.limits = Limits {
                memory,
                ..spec.limits
            };
            let started = hutch_runtime::start(&helper, &runtime_dir(dir, &name), &spec)?;
            println!("{}", started.init_pid);
            Ok(0)
        }
        ContainerCommand::Exec {
            name,
            uid,
            gid,
            cwd,
            command,
        } => {
            let env = [
                (
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ),
                ("HOME", "/root"),
                ("TERM", "xterm"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let req = ExecRequest {
                command,
                env,
                cwd,
                uid,
                gid,
                pty: None,
            };
            let dup = |fd: std::os::fd::BorrowedFd<'_>| -> anyhow::Result<OwnedFd> {
                Ok(fd.try_clone_to_owned()?)
            };
            let stdio = ExecStdio::Pipes {
                stdin: dup(std::io::stdin().as_fd())?,
                stdout: dup(std::io::stdout().as_fd())?,
                stderr: dup(std::io::stderr().as_fd())?,
            };
            let session = hutch_runtime::exec(&helper, &runtime_dir(dir, &name), &req, stdio)?;
            Ok(session.wait()?.code())
        }
        ContainerCommand::Stop {
            name,
            force,
            timeout,
        } => {
            let record = container::stop(
                &runtime_dir(dir, &name),
                Duration::from_secs(timeout),
                force,
            )?;
            println!(
                "{}",
                serde_json::json!({ "code": record.code, "signal": record.signal })
            );
            Ok(0)
        }
        ContainerCommand::State { name } => {
            let rd = runtime_dir(dir, &name);
            if !rd.exists() {
                bail!("container {name} not found");
            }
            let out = match container::status(&rd)? {
                Status::Running(state) => {
                    serde_json::json!({ "status": "running", "init_pid": state.init_pid, "monitor_pid": state.monitor_pid, "started_at": state.started_at })
                }
                Status::Stopped(exit) => {
                    serde_json::json!({ "status": "stopped", "last_exit": exit.map(|e| serde_json::json!({ "code": e.code, "signal": e.signal })) })
                }
            };
            println!("{out}");
            Ok(0)
        }
    }
}
