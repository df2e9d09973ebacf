//! The tarball writer: `backup/index.yaml` first, then snapshots, then the main volume,
//! entries as LXD's tar writer makes them. Owned by the export work.
