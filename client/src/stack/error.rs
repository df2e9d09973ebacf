//! What can be wrong with a stack file, said before anything on the server is touched.

use std::path::PathBuf;

/// A stack file that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax, with the place serde_yaml found it.
    #[error("{}:{line}:{column}: YAML syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key or value of the wrong shape, with its path in the file (`instances.web.imgae`)
    /// and, when it can be found, its line and column (`at`).
    #[error("{}{}: {key}: {message}", path.display(), at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Shape {
        path: PathBuf,
        at: Option<(usize, usize)>,
        key: String,
        message: String,
    },
    #[error("{path}: {why}")]
    Interpolation { path: String, why: String },
    /// A rule of stacks broken (a name, a reference, a cycle), at `key`.
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
}

impl StackError {
    pub fn invalid(key: impl Into<String>, why: impl Into<String>) -> Self {
        StackError::Invalid {
            key: key.into(),
            why: why.into(),
        }
    }
}
