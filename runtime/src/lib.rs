//! The kernel side of one hutch system container: namespaces, root filesystem and mounts,
//! id maps, cgroups, capabilities, the console, the per-container monitor and exec by setns.
//! It takes a plain [`ContainerSpec`] and knows nothing of the database or the API.
//!
//! Entry points: [`start`] boots a container under its own monitor process, [`exec`] runs
//! a command in it, the functions in [`container`] stop, freeze and measure it. The hutchd
//! helper binary (`hutchd-helper`) calls [`monitor_main`] and [`exec_main`] for its
//! `__monitor` and `__exec` modes before it starts any thread.

pub mod cgroup;
pub mod console;
pub mod container;
mod create;
pub mod error;
pub mod exec;
pub mod fd_limit;
pub mod hotplug;
pub mod idmap;
pub mod monitor;
mod reaper;
pub mod rootfs;
pub mod seccomp;
mod spawn;
pub mod spec;
pub mod state;
mod sys;
pub mod userns;

pub use container::Status;
pub use create::{register_builtin_hooks, BuiltinHook};
pub use error::{ErrorKind, Result, RuntimeError};
pub use exec::{
    attach as exec_attach, exec, exec_kept, exec_main, session_paths as exec_session_paths,
    sessions_dir as exec_sessions_dir, AttachedPipes, ExecController, ExecExit, ExecRequest,
    ExecSession, ExecStdio, WindowSize, BORN_IN_CGROUP2,
};
pub use hotplug::{device_plug, hotplug, HotplugOp};
pub use idmap::{IdMap, IdMapEntry};
pub use monitor::{monitor_main, start, MonitorClient, Started};
pub use spec::{BindMount, ContainerSpec, CpuAllowance, DeviceNode, InitUser, Limits, Seccomp};
pub use state::{ExitRecord, MonitorState, RuntimeDir};
pub use sys::process_start_time;
