//! Storage pools for hutch: volumes (image, instance, snapshot) behind one
//! [`StorageDriver`] trait, with a `dir` driver (copies, reflinked where possible) and a
//! `btrfs` driver (subvolumes and instant snapshots), a `zfs` driver (datasets and clones,
//! driven through the `zfs` command), and loop-file-backed pools.

mod btrfs;
mod copy;
mod dir;
mod driver;
mod error;
mod loopdev;
mod runner;
mod zfs;

pub use btrfs::BtrfsDriver;
pub use copy::clone_tree;
pub use dir::DirDriver;
pub use driver::{copy_volume_across, open_driver, DriverInfo, StorageDriver};
pub use error::StorageError;
pub use loopdev::{attach_and_mount, create_loop_pool};
pub use runner::{CommandRunner, FakeRunner, SystemRunner};
pub use zfs::ZfsDriver;
