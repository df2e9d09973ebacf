//! Layers built by hand, one rule each: whiteouts, opaque directories, and the hostile
//! entries that must be refused or skipped.

use std::fs;
use std::path::Path;

use hutch_oci::{flatten_layer, FlattenLimits, OciError};

/// An entry of a hand-built layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
}

/// A tar of `entries`, written without the tar crate's own path checks.
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let (name, data, link): (&str, &[u8], Option<&str>) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"", None)
            }
            E::File(n, d, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (n, d, None)
            }
            E::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                (n, b"", Some(t))
            }
            E::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                (n, b"", Some(t))
            }
            E::Char(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (n, b"", None)
            }
        };
        h.set_size(data.len() as u64);
        // Raw names: set_path would refuse `..` itself.
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            gnu.linkname = [0; 100];
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn apply(root: &Path, entries: &[E]) -> Result<(), OciError> {
    let mut total = 0;
    flatten_layer(
        &layer(entries)[..],
        root,
        FlattenLimits::default(),
        &mut total,
    )
}

#[test]
fn layers_apply_in_order_with_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    apply(
        root,
        &[
            E::Dir("etc/"),
            E::File("etc/gone", b"x", 0o644),
            E::File("etc/kept", b"old", 0o644),
            E::File("bin/su", b"su", 0o4755),
        ],
    )
    .unwrap();
    apply(
        root,
        &[
            E::File("etc/.wh.gone", b"", 0o644),
            E::File("etc/kept", b"new", 0o644),
            E::File("etc/added", b"a", 0o600),
        ],
    )
    .unwrap();
    assert!(!root.join("etc/gone").exists());
    assert_eq!(fs::read(root.join("etc/kept")).unwrap(), b"new");
    assert_eq!(fs::read(root.join("etc/added")).unwrap(), b"a");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root.join("bin/su"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755, "setuid kept");
}

#[test]
fn an_opaque_marker_hides_only_lower_layers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    apply(
        root,
        &[
            E::Dir("d/"),
            E::File("d/lower", b"l", 0o644),
            E::Dir("d/sub/"),
            E::File("d/sub/deep", b"l", 0o644),
        ],
    )
    .unwrap();
    apply(
        root,
        &[
            E::Dir("d/"),
            E::File("d/upper", b"u", 0o644),
            E::File("d/.wh..wh..opq", b"", 0o644),
        ],
    )
    .unwrap();
    assert!(!root.join("d/lower").exists());
    assert!(!root.join("d/sub").exists());
    assert!(root.join("d/upper").exists());
}

#[test]
fn parent_dir_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = apply(&root, &[E::File("../outside", b"x", 0o644)]).unwrap_err();
    assert!(matches!(err, OciError::Escape(_)), "{err}");
    assert!(!dir.path().join("outside").exists());
}

#[test]
fn absolute_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = apply(dir.path(), &[E::File("/tmp/hutch-oci-abs", b"x", 0o644)]).unwrap_err();
    assert!(matches!(err, OciError::Escape(_)), "{err}");
    assert!(!Path::new("/tmp/hutch-oci-abs").exists());
}

#[test]
fn writes_through_a_planted_symlink_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let err = apply(
        &root,
        &[
            E::Symlink("a", outside.to_str().unwrap()),
            E::File("a/passwd", b"pwned", 0o644),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, OciError::ThroughSymlink { .. }), "{err}");
    assert!(!outside.join("passwd").exists());
    // The same from a lower layer's symlink.
    let err = apply(&root, &[E::File("a/shadow", b"pwned", 0o644)]).unwrap_err();
    assert!(matches!(err, OciError::ThroughSymlink { .. }), "{err}");
    assert!(!outside.join("shadow").exists());
    // A whiteout through it removes nothing outside either.
    fs::write(outside.join("keep"), b"k").unwrap();
    let err = apply(&root, &[E::File("a/.wh.keep", b"", 0o644)]).unwrap_err();
    assert!(matches!(err, OciError::ThroughSymlink { .. }), "{err}");
    assert!(outside.join("keep").exists());
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(dir.path().join("secret"), b"s").unwrap();
    let err = apply(&root, &[E::Hardlink("h", "../secret")]).unwrap_err();
    assert!(matches!(err, OciError::Escape(_)), "{err}");
    // An absolute target means the image's own root: missing there, so refused.
    let secret = dir.path().join("secret");
    let err = apply(&root, &[E::Hardlink("h", secret.to_str().unwrap())]).unwrap_err();
    assert!(matches!(err, OciError::Invalid { .. }), "{err}");
    assert!(!root.join("h").exists());
    // Inside the root, it works.
    apply(
        &root,
        &[E::File("f", b"data", 0o644), E::Hardlink("h", "/f")],
    )
    .unwrap();
    assert_eq!(fs::read(root.join("h")).unwrap(), b"data");
}

#[test]
fn device_nodes_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &[E::Char("null"), E::File("f", b"x", 0o644)]).unwrap();
    assert!(fs::symlink_metadata(dir.path().join("null")).is_err());
    assert!(dir.path().join("f").exists());
}

#[test]
fn the_size_bound_holds_over_all_layers() {
    let dir = tempfile::tempdir().unwrap();
    let limits = FlattenLimits { max_bytes: 10 };
    let mut total = 0;
    let l = layer(&[E::File("a", b"123456", 0o644)]);
    flatten_layer(&l[..], dir.path(), limits, &mut total).unwrap();
    let err = flatten_layer(&l[..], dir.path(), limits, &mut total).unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
}

#[test]
fn whiteouts_of_dot_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    for name in [".wh...", ".wh..", "etc/.wh...", "etc/.wh.."] {
        let err = apply(&root, &[E::File(name, b"", 0o644)]).unwrap_err();
        assert!(matches!(err, OciError::Escape(_)), "{name}: {err}");
        assert!(root.join("etc").is_dir(), "{name}");
    }
}
