//! Storage pools for hutch: pools made, mounted and destroyed by a [`PoolHost`] (a
//! directory, a loop file or block device with btrfs, a zpool or an existing dataset), and
//! their volumes (image, instance, snapshot, custom) behind one [`StorageDriver`] trait, with
//! a `dir` driver (copies, reflinked where possible), a `btrfs` driver (subvolumes and
//! instant snapshots) and a `zfs` driver (datasets and clones). Every external command goes
//! through a [`CommandRunner`] and every mount through a [`Mounter`], each with a fake.

mod btrfs;
mod btrfs_ioctl;
mod copy;
mod dir;
mod driver;
mod error;
mod fake;
mod loopdev;
mod mounts;
mod pool;
mod runner;
mod usage;
#[cfg(test)]
mod volume_failures;
mod zfs;

pub use btrfs::BtrfsDriver;
pub use copy::{clone_tree, clone_tree_until, StopCheck};
pub use dir::DirDriver;
pub use driver::{copy_volume_across, copy_volume_across_until, DriverInfo, StorageDriver};
pub use error::{ErrorKind, StorageError};
pub use fake::{FakeRunner, FakeWorld};
pub use mounts::{FakeMounter, Mounter, SystemMounter};
pub use pool::{default_loop_size, open_driver, supported_drivers, NewPool, PoolHost, PoolRecord};
pub use runner::{CommandRunner, SystemRunner};
pub use usage::{filesystem_usage, tree_usage, PoolUsage};
pub use zfs::ZfsDriver;
