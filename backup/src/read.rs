//! A backup tarball read from a stream, with every entry checked before anything is
//! written. Owned by the import work.
