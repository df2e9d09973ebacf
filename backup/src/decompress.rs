//! A compressed stream told by its magic bytes (gzip, bzip2, xz, lzma, zstd, none).
//! Owned by the import work.
