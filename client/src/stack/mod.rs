//! Declarative stacks (`hutch apply -f stack.yaml`): a file that declares instances,
//! networks, volumes and profiles, applied idempotently over the `/1.0` API.
//!
//! `file` reads and shapes the YAML, `interpolate` fills `${VAR}`, `model` checks it and
//! builds the wanted objects, `current` reads the server, `plan` diffs the two, `execute`
//! carries the plan out with the calls in `actions`.

pub mod actions;
pub mod current;
pub mod error;
pub mod execute;
pub mod file;
pub mod interpolate;
pub mod model;
pub mod plan;
pub mod ports;

use std::path::Path;

pub use error::StackError;
pub use model::Stack;

/// Loads and checks the stack file at `path`, variables from the process environment and
/// the `.env` beside it. Variables used but set nowhere are warned about on stderr (they
/// become empty strings, as in compose).
pub fn load(path: &Path) -> Result<Stack, StackError> {
    let lookup = |k: &str| std::env::var(k).ok();
    let (file, missing) = file::load(path, &lookup)?;
    for name in missing {
        eprintln!("Warning: the {name} variable is not set; it stands for an empty string");
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    model::build(file, &dir)
}
