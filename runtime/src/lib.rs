//! The kernel side of one hutch system container: namespaces, root filesystem and mounts,
//! id maps, cgroups, capabilities, the console, the per-container monitor and exec by setns.
//! It takes a plain [`ContainerSpec`] and knows nothing of the database or the API.

pub mod cgroup;
pub mod error;
pub mod idmap;
pub mod spec;

pub use error::{ErrorKind, Result, RuntimeError};
pub use idmap::{IdMap, IdMapEntry};
pub use spec::{BindMount, ContainerSpec, CpuAllowance, DeviceNode, Limits};
