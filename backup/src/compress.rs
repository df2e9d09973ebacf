//! Compression of a tarball stream (`backups.compression_algorithm`, `--compression`).
//! Owned by the export work.
