//! The control channel's messages (LXD's `lxd/migration/migrate.proto`, proto2), written by
//! hand for prost, and the negotiation of a transport from an offer.

use super::error::MigrationError;

/// How a volume travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MigrationFsType {
    Rsync = 0,
    Btrfs = 1,
    Zfs = 2,
    Rbd = 3,
    BlockAndRsync = 4,
}

impl MigrationFsType {
    /// The name Go's generated `String()` gives, used in LXD's messages.
    pub fn name(self) -> &'static str {
        match self {
            MigrationFsType::Rsync => "RSYNC",
            MigrationFsType::Btrfs => "BTRFS",
            MigrationFsType::Zfs => "ZFS",
            MigrationFsType::Rbd => "RBD",
            MigrationFsType::BlockAndRsync => "BLOCK_AND_RSYNC",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CriuType {
    CriuRsync = 0,
    Phaul = 1,
    None = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IdMapType {
    #[prost(bool, required, tag = "1")]
    pub isuid: bool,
    #[prost(bool, required, tag = "2")]
    pub isgid: bool,
    #[prost(int32, required, tag = "3")]
    pub hostid: i32,
    #[prost(int32, required, tag = "4")]
    pub nsid: i32,
    #[prost(int32, required, tag = "5")]
    pub maprange: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Config {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub config: Vec<Config>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub local_config: Vec<Config>,
    #[prost(string, repeated, tag = "3")]
    pub profiles: Vec<String>,
    #[prost(bool, required, tag = "4")]
    pub ephemeral: bool,
    #[prost(message, repeated, tag = "5")]
    pub local_devices: Vec<Device>,
    #[prost(int32, required, tag = "6")]
    pub architecture: i32,
    #[prost(bool, required, tag = "7")]
    pub stateful: bool,
    #[prost(int64, optional, tag = "8")]
    pub creation_date: Option<i64>,
    #[prost(int64, optional, tag = "9")]
    pub last_used_date: Option<i64>,
    #[prost(int64, optional, tag = "10")]
    pub expiry_date: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RsyncFeatures {
    #[prost(bool, optional, tag = "1")]
    pub xattrs: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub delete: Option<bool>,
    #[prost(bool, optional, tag = "3")]
    pub compress: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub bidirectional: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ZfsFeatures {
    #[prost(bool, optional, tag = "1")]
    pub compress: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub migration_header: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BtrfsFeatures {
    #[prost(bool, optional, tag = "1")]
    pub migration_header: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub header_subvolumes: Option<bool>,
    #[prost(bool, optional, tag = "3")]
    pub header_subvolume_uuids: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MigrationHeader {
    #[prost(enumeration = "MigrationFsType", required, tag = "1")]
    pub fs: i32,
    #[prost(enumeration = "CriuType", optional, tag = "2")]
    pub criu: Option<i32>,
    #[prost(message, repeated, tag = "3")]
    pub idmap: Vec<IdMapType>,
    #[prost(string, repeated, tag = "4")]
    pub snapshot_names: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub snapshots: Vec<Snapshot>,
    #[prost(bool, optional, tag = "7")]
    pub predump: Option<bool>,
    #[prost(message, optional, tag = "8")]
    pub rsync_features: Option<RsyncFeatures>,
    #[prost(bool, optional, tag = "9")]
    pub refresh: Option<bool>,
    #[prost(message, optional, tag = "10")]
    pub zfs_features: Option<ZfsFeatures>,
    #[prost(int64, optional, tag = "11")]
    pub volume_size: Option<i64>,
    #[prost(message, optional, tag = "12")]
    pub btrfs_features: Option<BtrfsFeatures>,
    #[prost(uint32, optional, tag = "13")]
    pub index_header_version: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MigrationControl {
    #[prost(bool, required, tag = "1")]
    pub success: bool,
    #[prost(string, optional, tag = "2")]
    pub message: Option<String>,
}

/// Rsync features, by LXD's names.
pub const XATTRS: &str = "xattrs";
pub const DELETE: &str = "delete";
pub const COMPRESS: &str = "compress";
pub const BIDIRECTIONAL: &str = "bidirectional";
/// btrfs features, by LXD's names.
pub const BTRFS_MIGRATION_HEADER: &str = "migration_header";
pub const BTRFS_HEADER_SUBVOLUMES: &str = "header_subvolumes";
pub const BTRFS_HEADER_SUBVOLUME_UUIDS: &str = "header_subvolume_uuids";

/// A transport and the features agreed for it (LXD's `migration.Type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    pub fs: MigrationFsType,
    pub features: Vec<&'static str>,
}

impl Transport {
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }
}

/// The transports a pool offers or accepts, preferred first: btrfs sends where both sides
/// are btrfs, rsync everywhere.
pub fn pool_transports(send_receive: bool) -> Vec<Transport> {
    let rsync = Transport {
        fs: MigrationFsType::Rsync,
        features: vec![XATTRS, DELETE, COMPRESS, BIDIRECTIONAL],
    };
    if send_receive {
        // No subvolume UUIDs: a refresh falls back to rsync rather than diffing subvolumes.
        let btrfs = Transport {
            fs: MigrationFsType::Btrfs,
            features: vec![BTRFS_MIGRATION_HEADER, BTRFS_HEADER_SUBVOLUMES],
        };
        vec![btrfs, rsync]
    } else {
        vec![rsync]
    }
}

fn flag(f: Option<bool>) -> bool {
    f.unwrap_or(false)
}

impl MigrationHeader {
    /// The header of `types` (LXD's `TypesToHeader`): the first is the preferred one; the
    /// first rsync transport gives the rsync features.
    pub fn of_types(types: &[Transport]) -> MigrationHeader {
        let preferred = types
            .first()
            .map(|t| t.fs)
            .unwrap_or(MigrationFsType::Rsync);
        let mut h = MigrationHeader {
            fs: preferred as i32,
            ..Default::default()
        };
        if let Some(t) = types.first().filter(|t| t.fs == MigrationFsType::Btrfs) {
            h.btrfs_features = Some(BtrfsFeatures {
                migration_header: Some(t.has(BTRFS_MIGRATION_HEADER)),
                header_subvolumes: Some(t.has(BTRFS_HEADER_SUBVOLUMES)),
                header_subvolume_uuids: t.has(BTRFS_HEADER_SUBVOLUME_UUIDS).then_some(true),
            });
        }
        if let Some(t) = types.iter().find(|t| {
            matches!(
                t.fs,
                MigrationFsType::Rsync | MigrationFsType::BlockAndRsync
            )
        }) {
            h.rsync_features = Some(RsyncFeatures {
                xattrs: Some(t.has(XATTRS)),
                delete: Some(t.has(DELETE)),
                compress: Some(t.has(COMPRESS)),
                bidirectional: Some(t.has(BIDIRECTIONAL)),
            });
        }
        h
    }

    /// The rsync features named in the header; a peer without `bidirectional` is taken as
    /// LXD 3.7 (`xattrs`, `delete`, `compress`).
    pub fn rsync_features(&self) -> Vec<&'static str> {
        let f = self.rsync_features.clone().unwrap_or_default();
        let mut out = Vec::new();
        for (on, name) in [
            (f.xattrs, XATTRS),
            (f.delete, DELETE),
            (f.compress, COMPRESS),
            (f.bidirectional, BIDIRECTIONAL),
        ] {
            if flag(on) {
                out.push(name);
            }
        }
        if !out.contains(&BIDIRECTIONAL) {
            return vec![XATTRS, DELETE, COMPRESS];
        }
        out
    }

    pub fn btrfs_features(&self) -> Vec<&'static str> {
        let f = self.btrfs_features.clone().unwrap_or_default();
        [
            (f.migration_header, BTRFS_MIGRATION_HEADER),
            (f.header_subvolumes, BTRFS_HEADER_SUBVOLUMES),
            (f.header_subvolume_uuids, BTRFS_HEADER_SUBVOLUME_UUIDS),
        ]
        .into_iter()
        .filter(|(on, _)| flag(*on))
        .map(|(_, n)| n)
        .collect()
    }

    fn zfs_features(&self) -> Vec<&'static str> {
        let f = self.zfs_features.clone().unwrap_or_default();
        [
            (f.compress, COMPRESS),
            (f.migration_header, "migration_header"),
        ]
        .into_iter()
        .filter(|(on, _)| flag(*on))
        .map(|(_, n)| n)
        .collect()
    }
}

/// LXD's `MatchTypes`: each of `ours` in order that is the offered transport or the
/// fallback (rsync), with the features both sides have.
pub fn match_types(
    offer: &MigrationHeader,
    ours: &[Transport],
) -> Result<Vec<Transport>, MigrationError> {
    let offered_fs = MigrationFsType::try_from(offer.fs).ok();
    let offered = [offered_fs, Some(MigrationFsType::Rsync)];
    let refresh = flag(offer.refresh);
    let mut matched = Vec::new();
    for our in ours {
        for fs in offered.iter().flatten() {
            if *fs != our.fs {
                continue;
            }
            let theirs = match fs {
                MigrationFsType::Zfs => offer.zfs_features(),
                MigrationFsType::Btrfs => offer.btrfs_features(),
                MigrationFsType::Rsync => offer.rsync_features(),
                _ => Vec::new(),
            };
            let common: Vec<&'static str> = our
                .features
                .iter()
                .copied()
                .filter(|f| theirs.contains(f))
                .collect();
            if refresh
                && our.fs == MigrationFsType::Btrfs
                && !common.contains(&BTRFS_HEADER_SUBVOLUME_UUIDS)
            {
                continue;
            }
            matched.push(Transport {
                fs: our.fs,
                features: common,
            });
        }
    }
    if matched.is_empty() {
        let name = |fs: Option<MigrationFsType>| fs.map(|f| f.name().to_string());
        let offered: Vec<String> = offered
            .iter()
            .map(|f| name(*f).unwrap_or_else(|| offer.fs.to_string()))
            .collect();
        let ours: Vec<&str> = ours.iter().map(|t| t.fs.name()).collect();
        return Err(MigrationError::NoMatchingTypes {
            offered: offered.join(" "),
            ours: ours.join(" "),
        });
    }
    Ok(matched)
}

/// The architecture's osarch ID (LXD's numbering), 0 when unknown.
pub fn arch_id(name: &str) -> i32 {
    match name {
        "i686" => 1,
        "x86_64" => 2,
        "armv7l" => 3,
        "aarch64" => 4,
        "ppc" => 5,
        "ppc64" => 6,
        "ppc64le" => 7,
        "s390x" => 8,
        "mips" => 9,
        "mips64" => 10,
        "riscv32" => 11,
        "riscv64" => 12,
        _ => 0,
    }
}

/// The architecture's name from its osarch ID.
pub fn arch_name(id: i32) -> Option<&'static str> {
    [
        "i686", "x86_64", "armv7l", "aarch64", "ppc", "ppc64", "ppc64le", "s390x", "mips",
        "mips64", "riscv32", "riscv64",
    ]
    .iter()
    .copied()
    .find(|n| arch_id(n) == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn rsync_offer() -> MigrationHeader {
        MigrationHeader::of_types(&pool_transports(false))
    }

    #[test]
    fn headers_encode_as_lxd_reads_them() {
        let mut h = rsync_offer();
        h.index_header_version = Some(1);
        let bytes = h.encode_to_vec();
        // fs=RSYNC is a required field: present even at its default.
        assert_eq!(&bytes[..2], &[0x08, 0x00]);
        let back = MigrationHeader::decode(&bytes[..]).unwrap();
        assert_eq!(back, h);
        let c = MigrationControl {
            success: true,
            message: Some(String::new()),
        };
        assert_eq!(c.encode_to_vec(), vec![0x08, 0x01, 0x12, 0x00]);
    }

    #[test]
    fn a_btrfs_offer_meets_a_dir_target_on_rsync() {
        let offer = MigrationHeader::of_types(&pool_transports(true));
        assert_eq!(offer.fs, MigrationFsType::Btrfs as i32);
        let got = match_types(&offer, &pool_transports(false)).unwrap();
        assert_eq!(got[0].fs, MigrationFsType::Rsync);
        assert_eq!(
            got[0].features,
            vec![XATTRS, DELETE, COMPRESS, BIDIRECTIONAL]
        );
        let both = match_types(&offer, &pool_transports(true)).unwrap();
        assert_eq!(both[0].fs, MigrationFsType::Btrfs);
        assert_eq!(
            both[0].features,
            vec![BTRFS_MIGRATION_HEADER, BTRFS_HEADER_SUBVOLUMES]
        );
        // An old peer without `bidirectional` gets LXD 3.7's rsync features.
        let mut old = rsync_offer();
        old.rsync_features = Some(RsyncFeatures {
            xattrs: Some(true),
            ..Default::default()
        });
        let got = match_types(&old, &pool_transports(false)).unwrap();
        assert_eq!(got[0].features, vec![XATTRS, DELETE, COMPRESS]);
    }

    #[test]
    fn nothing_in_common_is_lxds_error() {
        let zfs = MigrationHeader {
            fs: MigrationFsType::Zfs as i32,
            ..Default::default()
        };
        let ours = [Transport {
            fs: MigrationFsType::Btrfs,
            features: vec![],
        }];
        let err = match_types(&zfs, &ours).unwrap_err();
        assert_eq!(
            err.to_string(),
            "No matching migration types found. Offered types: [ZFS RSYNC], our types: [BTRFS]"
        );
    }
}
