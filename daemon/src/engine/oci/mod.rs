//! OCI images: archives imported as ordinary hutch images whose properties carry the OCI
//! config ([`import`]), and instances made from them run the image's process instead of
//! /sbin/init ([`launch`]).

mod import;
mod launch;
mod properties;
mod registry;

pub use import::import_archive;
pub use launch::{apply_to_spec, is_oci, STOP_TIMEOUT};
pub use properties::environment_keys;
pub use registry::pull_registry;
