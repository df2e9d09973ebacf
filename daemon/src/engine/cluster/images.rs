//! Images across a cluster: an image is imported once, on any member, and reaches the
//! member a create is placed on when it is needed there. A create naming an image (by
//! alias or fingerprint) that its member lacks is rewritten, before it is answered or sent
//! on, to pull the image from a member that has it (LXD's protocol, that member's
//! certificate pinned, a one-time secret it issued), or to name it by fingerprint when the
//! member has it under no alias.

use serde_json::{json, Value};

use crate::db::images::ImageRow;
use crate::engine::Engine;
use crate::error::Result;
use axum::http::Method;

impl Engine {
    /// `GET /1.0/images` or `/1.0/images/aliases` (`path`) of the whole cluster: this
    /// member's `local` list and each online member's, asked in parallel, each image (by
    /// fingerprint) or alias (by name) once.
    pub async fn merge_cluster_list(&self, path: &str, key: &str, local: Vec<Value>) -> Vec<Value> {
        if self.membership().is_none() {
            return local;
        }
        let answers = self.ask_other_members(path).await;
        let id = |v: &Value| match v {
            Value::String(url) => url.clone(),
            other => other[key].as_str().unwrap_or_default().to_string(),
        };
        let mut seen: std::collections::HashMap<String, usize> =
            local.iter().enumerate().map(|(i, v)| (id(v), i)).collect();
        let mut out = local;
        for answer in answers {
            let Value::Array(items) = answer else {
                continue;
            };
            for item in items {
                match seen.get(&id(&item)) {
                    // One image on several members: its aliases wherever made.
                    Some(&at) => merge_aliases(&mut out[at], &item),
                    None => {
                        seen.insert(id(&item), out.len());
                        out.push(item);
                    }
                }
            }
        }
        out
    }

    /// The image this member has under `alias` (or that fingerprint prefix), or
    /// `fingerprint`.
    fn local_image(&self, alias: &str, fingerprint: &str) -> Result<Option<ImageRow>> {
        if !alias.is_empty() {
            return Ok(match self.d.db.alias(alias)? {
                Some(a) => self.d.db.image_by_prefix(&a.fingerprint).ok(),
                None => self.d.db.image_by_prefix(alias).ok(),
            });
        }
        if fingerprint.is_empty() {
            return Ok(None);
        }
        Ok(self.d.db.image_by_prefix(fingerprint).ok())
    }

    /// The member that answers a read of an image (`alias` or fingerprint prefix `fp`)
    /// this member lacks: the first other online member that has it. Images are the
    /// cluster's to read from any member, as LXD's are.
    pub async fn image_holder(&self, alias: &str, fp: &str) -> Result<Option<String>> {
        if self.local_image(alias, fp)?.is_some() {
            return Ok(None);
        }
        let Some(m) = self.membership() else {
            return Ok(None);
        };
        let others = m.other_online_members();
        for holder in others {
            if self.remote_image(&holder, alias, fp).await.is_some() {
                return Ok(Some(holder));
            }
        }
        Ok(None)
    }

    /// A create's `source` for member `dest` (this one or another), when it names an
    /// image without a server: None when it goes as it is (the member has the image, or
    /// nobody does and it says so itself).
    pub async fn cluster_image_source(&self, dest: &str, source: &Value) -> Result<Option<Value>> {
        let text = |k: &str| source[k].as_str().unwrap_or_default().to_string();
        if text("type") != "image" || !text("server").is_empty() {
            return Ok(None);
        }
        let Some(m) = self.membership() else {
            return Ok(None);
        };
        let me = m.server_name.clone();
        let (alias, fingerprint) = (text("alias"), text("fingerprint"));
        if let Some(image) = self.local_image(&alias, &fingerprint)? {
            if dest == me {
                return Ok(None);
            }
            return self.offer_image(dest, &me, &image.fingerprint).await;
        }
        // Not here: the first other member that has it.
        let others = m.other_online_members();
        for holder in others {
            let Some(fp) = self.remote_image(&holder, &alias, &fingerprint).await else {
                continue;
            };
            if holder == dest {
                // It resolves its own alias.
                return Ok(None);
            }
            return self.offer_image(dest, &holder, &fp).await;
        }
        Ok(None)
    }

    /// The fingerprint of the image member `holder` has under `alias` (or that prefix),
    /// or `fingerprint`.
    async fn remote_image(&self, holder: &str, alias: &str, fingerprint: &str) -> Option<String> {
        if !alias.is_empty() {
            let path = format!("/1.0/images/aliases/{alias}");
            if let Ok(a) = self.get_from_member(holder, &path).await {
                return a["target"].as_str().map(str::to_string);
            }
        }
        let prefix = if alias.is_empty() { fingerprint } else { alias };
        if prefix.is_empty() {
            return None;
        }
        let found = self
            .get_from_member(holder, &format!("/1.0/images/{prefix}"))
            .await
            .ok()?;
        found["fingerprint"].as_str().map(str::to_string)
    }

    /// Image `fingerprint` of member `holder` for member `dest`: by fingerprint when
    /// `dest` has it, else pulled from `holder` with a secret `holder` issued.
    async fn offer_image(
        &self,
        dest: &str,
        holder: &str,
        fingerprint: &str,
    ) -> Result<Option<Value>> {
        let Some(m) = self.membership() else {
            return Ok(None);
        };
        let has_it = if dest == m.server_name {
            self.d.db.image_by_prefix(fingerprint).is_ok()
        } else {
            self.get_from_member(dest, &format!("/1.0/images/{fingerprint}"))
                .await
                .is_ok()
        };
        if has_it {
            return Ok(Some(json!({"type": "image", "fingerprint": fingerprint})));
        }
        let Some(link) = m.links().members.get(holder).cloned() else {
            return Ok(None);
        };
        let secret = if holder == m.server_name {
            self.image_secret(fingerprint)?.snapshot().metadata["secret"].clone()
        } else {
            let path = format!("/1.0/images/{fingerprint}/secret");
            let op = self.member_call(holder, Method::POST, &path, None).await?;
            op["metadata"]["metadata"]["secret"].clone()
        };
        Ok(Some(json!({
            "type": "image",
            "mode": "pull",
            "server": link.url,
            "protocol": "lxd",
            "certificate": hutch_tls::pem_of_der(&link.certificate),
            "secret": secret,
            "fingerprint": fingerprint,
        })))
    }
}

impl Engine {
    /// A change of an image or alias (`method` on `path`, with `body`) that member `lead`
    /// made: made on every other online member too, each on its own copy (one without
    /// the image answers 404 and has nothing to change), so the cluster's images change
    /// once, as LXD's do. Waits for each; what one could not do is logged.
    pub async fn repeat_image_change(&self, lead: &str, method: Method, path: &str, body: &[u8]) {
        let Some(m) = self.membership() else {
            return;
        };
        let others: Vec<String> = m
            .other_online_members()
            .into_iter()
            .filter(|member| member != lead)
            .collect();
        let body: Option<Value> = serde_json::from_slice(body).ok();
        let changes = others.iter().map(|member| {
            let (method, body) = (method.clone(), body.clone());
            async move {
                let envelope = self.member_call(member, method, path, body).await?;
                self.member_wait(member, &envelope).await
            }
        });
        let done = futures_util::future::join_all(changes).await;
        for (member, result) in others.iter().zip(done) {
            match result {
                Ok(()) | Err(crate::error::DaemonError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(member = %member, path, error = %crate::chain(&e), "image change not made on a cluster member")
                }
            }
        }
    }
}

/// `other`'s aliases added to `image`'s (by name).
fn merge_aliases(image: &mut Value, other: &Value) {
    let (Some(mine), Some(theirs)) = (
        image.get_mut("aliases").and_then(Value::as_array_mut),
        other["aliases"].as_array(),
    ) else {
        return;
    };
    for alias in theirs {
        if !mine.iter().any(|a| a["name"] == alias["name"]) {
            mine.push(alias.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_image_on_two_members_has_the_aliases_of_both() {
        let mut here = json!({"fingerprint": "ab", "aliases": []});
        let there = json!({"fingerprint": "ab", "aliases": [{"name": "bb"}]});
        merge_aliases(&mut here, &there);
        merge_aliases(&mut here, &there);
        assert_eq!(here["aliases"], json!([{"name": "bb"}]));
    }
}
