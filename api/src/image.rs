//! Images and their aliases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An image alias as listed on an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAliasRef {
    pub name: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub description: String,
}

/// The writable part of an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagePut {
    #[serde(default)]
    pub auto_update: bool,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub profiles: Vec<String>,
}

/// An image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub aliases: Vec<ImageAliasRef>,
    pub architecture: String,
    pub auto_update: bool,
    pub cached: bool,
    pub fingerprint: String,
    pub filename: String,
    pub public: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: i64,
    pub profiles: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub expires_at: String,
    pub created_at: String,
    pub last_used_at: String,
    pub uploaded_at: String,
    /// Where an image pulled by alias came from; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_source: Option<ImageSource>,
}

/// `update_source` of an image: the remote and alias it is refreshed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub certificate: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub image_type: String,
}

/// An alias: `GET /1.0/images/aliases/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageAlias {
    pub name: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub description: String,
    #[serde(default)]
    pub target: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// `PUT`/`PATCH /1.0/images/aliases/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageAliasPut {
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub description: String,
    #[serde(default)]
    pub target: String,
}

/// Where `POST /1.0/images` (JSON) takes an image from: an instance or one of its
/// snapshots (`lxc publish`), or a remote image server (`image`, mode `pull`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagesPostSource {
    /// `instance`, `container` or `snapshot`; `image` (and `url`) name remote sources.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `c1`, or `c1/snap0` for a snapshot.
    #[serde(default)]
    pub name: String,
    /// Remote sources: `pull`.
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub mode: String,
    /// The remote's base URL.
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub server: String,
    /// `simplestreams` or `lxd` (the default).
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub protocol: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub alias: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub fingerprint: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub certificate: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub secret: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub image_type: String,
    /// `url` sources.
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub url: String,
}

/// `POST /1.0/images` with a JSON body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagesPost {
    #[serde(default)]
    pub source: Option<ImagesPostSource>,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub aliases: Vec<ImageAliasRef>,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub compression_algorithm: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub filename: String,
    /// Pulled images: keep refreshing from the source alias.
    #[serde(default)]
    pub auto_update: bool,
}
