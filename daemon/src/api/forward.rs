//! Which member answers a request, in a cluster: an instance's requests go to the member
//! it lives on, an operation's to the member that runs it, a create to its `target` (or
//! the member the scheduler picks), a request for what is each member's own (server
//! config, resources, pools, networks, metrics) with `?target=` to that member; everything
//! else, and whatever another member forwarded here, is answered here. A change of an
//! image or alias is made by a member that has it, then by every other on its own copy.
//! Standalone, every request passes straight through.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Trust;
use crate::daemon::AppState;
use crate::engine::cluster::membership::Membership;
use crate::error::{DaemonError, Result};

/// A request another member forwarded (its name): answered here, never sent on.
#[derive(Debug, Clone)]
pub struct FromMember(pub String);

/// The forwarding layer (inside authentication: only what the caller may ask is sent on,
/// with the caller's trust).
pub async fn forward(State(e): State<AppState>, req: Request, next: Next) -> Response {
    let Some(m) = e.membership() else {
        return next.run(req).await;
    };
    if let Some(FromMember(by)) = req.extensions().get::<FromMember>() {
        tracing::trace!(member = %by, path = %req.uri().path(), "forwarded here");
        return next.run(req).await;
    }
    let trust = req
        .extensions()
        .get::<Trust>()
        .copied()
        .unwrap_or(Trust::Untrusted);
    if let Some(write) = image_write(req.method(), req.uri().path()) {
        return change_image(&e, &m, write, req, next, trust).await;
    }
    match route(&e, &m, req).await {
        Routed::Here(req) => next.run(req).await,
        Routed::To(member, req) => e.forward(&member, req, trust).await,
        Routed::Refused(err, req) => {
            // The body read first (a small one): a client still sending it would see its
            // connection closed under it instead of the answer.
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_LIMIT).await;
            err.into_response()
        }
    }
}

/// The most of a refused request's body read before the answer.
const DRAIN_LIMIT: usize = 16 << 20;

enum Routed {
    Here(Request),
    To(String, Request),
    Refused(DaemonError, Request),
}

/// The `target` of a query string, if any.
fn target_of(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "target")
        .map(|(_, v)| super::names::percent_decode(v))
        .filter(|v| !v.is_empty())
}

async fn route(e: &AppState, m: &Membership, req: Request) -> Routed {
    // The request is kept for every answer: an error comes back with it.
    let (method, path, query) = (
        req.method().clone(),
        req.uri().path().to_string(),
        req.uri().query().map(str::to_string),
    );
    let decided = decide(e, m, &method, &path, query.as_deref()).await;
    let is_create = method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/1.0/instances" | "/1.0/containers"
        );
    match decided {
        Ok(member) if is_create => {
            let dest = member.unwrap_or_else(|| m.server_name.clone());
            let targeted = target_of(query.as_deref()).is_some();
            match prepare_create(e, dest, targeted, req).await {
                Ok((dest, req)) if dest == m.server_name => Routed::Here(req),
                Ok((dest, req)) => Routed::To(dest, req),
                Err(err) => Routed::Refused(err, Request::new(Body::empty())),
            }
        }
        Ok(Some(member)) => Routed::To(member, req),
        Ok(None) => Routed::Here(req),
        Err(err) => Routed::Refused(err, req),
    }
}

/// The member that answers a request, when it is not this one.
async fn decide(
    e: &AppState,
    m: &Membership,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Result<Option<String>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let target = target_of(query);
    let me = m.server_name.as_str();
    match segments.as_slice() {
        ["1.0", "instances" | "containers"] if *method == Method::POST => {
            let member = match target {
                Some(t) => t,
                None => e.choose_member(m).await?,
            };
            if member == me {
                return Ok(None);
            }
            e.check_member(m, &member).await?;
            Ok(Some(member))
        }
        ["1.0", "instances" | "containers", name, ..] => {
            let name = super::names::percent_decode(name);
            if e.has_instance(&name)? {
                return Ok(None);
            }
            match m.placement(&name).await? {
                Some(owner) if owner != me => Ok(Some(owner)),
                _ => Ok(None),
            }
        }
        // A member online removes itself.
        ["1.0", "cluster", "members", name] if *method == Method::DELETE && *name != me => {
            let name = super::names::percent_decode(name);
            let online = m.links().members.get(&name).is_some_and(|l| l.online);
            Ok(online.then_some(name))
        }
        // An image this member lacks is read from one that has it.
        ["1.0", "images", "aliases", name] if *method == Method::GET => {
            e.image_holder(&super::names::percent_decode(name), "")
                .await
        }
        ["1.0", "images", fp] | ["1.0", "images", fp, "export"]
            if *method == Method::GET && *fp != "aliases" =>
        {
            e.image_holder("", fp).await
        }
        // An operation of another member: the one a request here was forwarded to, else
        // the one that knows it (listed cluster-wide, so any may be asked for).
        ["1.0", "operations", id, ..] if e.operations().get(id).is_none() => {
            match e.forwarded_operation_member(id) {
                Some(member) => Ok(Some(member)),
                None => Ok(e.operation_holder(id).await),
            }
        }
        // What is each member's own: its server config, resources, pools and volumes,
        // networks and metrics, as LXD forwards them by target. Anything else (images,
        // profiles, events, …) is the cluster's, answered here whatever the target (LXD's
        // client puts its target on every request of a command).
        ["1.0"] | ["1.0", "resources" | "storage-pools" | "networks" | "metrics", ..] => {
            match target {
                Some(t) if t != me => {
                    e.check_member(m, &t).await?;
                    Ok(Some(t))
                }
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// A change of the cluster's images: what it names.
enum ImageWrite {
    /// `PUT`/`PATCH`/`DELETE /1.0/images/<fingerprint>`.
    Image(String),
    /// `POST /1.0/images/aliases` (the image is in the body's `target`).
    NewAlias,
    /// `PUT`/`PATCH`/`POST`/`DELETE /1.0/images/aliases/<name>`.
    Alias(String),
}

fn image_write(method: &Method, path: &str) -> Option<ImageWrite> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let decode = super::names::percent_decode;
    match segments.as_slice() {
        ["1.0", "images", "aliases"] if *method == Method::POST => Some(ImageWrite::NewAlias),
        ["1.0", "images", "aliases", name]
            if [Method::PUT, Method::PATCH, Method::POST, Method::DELETE].contains(method) =>
        {
            Some(ImageWrite::Alias(decode(name)))
        }
        ["1.0", "images", fp]
            if *fp != "aliases"
                && [Method::PUT, Method::PATCH, Method::DELETE].contains(method) =>
        {
            Some(ImageWrite::Image(decode(fp)))
        }
        _ => None,
    }
}

/// The most of an image change's body read (properties and aliases: small JSON).
const IMAGE_CHANGE_LIMIT: usize = 1 << 20;

/// An image or alias changed for the whole cluster: by the member that has it (this one
/// if it does), then by every other member on its own copy.
async fn change_image(
    e: &AppState,
    m: &Membership,
    write: ImageWrite,
    req: Request,
    next: Next,
    trust: Trust,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, IMAGE_CHANGE_LIMIT).await else {
        return DaemonError::BadRequest("Request body too large".into()).into_response();
    };
    let holder = match &write {
        ImageWrite::Image(fp) => e.image_holder("", fp).await,
        ImageWrite::Alias(name) => e.image_holder(name, "").await,
        ImageWrite::NewAlias => {
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            e.image_holder("", body["target"].as_str().unwrap_or_default())
                .await
        }
    };
    let (method, path) = (
        parts.method.clone(),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
    );
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    let (lead, answer) = match holder {
        Ok(None) => (m.server_name.clone(), next.run(req).await),
        Ok(Some(member)) => (member.clone(), e.forward(&member, req, trust).await),
        Err(err) => return err.into_response(),
    };
    if answer.status().is_success() {
        e.repeat_image_change(&lead, method, &path, &bytes).await;
    }
    answer
}

/// A create for member `dest` made ready to be answered there: a copy goes to the
/// member of the instance it copies unless `targeted`, and is rewritten to pull it over
/// the migration path when that member is not `dest` (see `engine/cluster/copy.rs`); an
/// image `dest` lacks is rewritten to be pulled from a member that has it (see
/// `engine/cluster/images.rs`), so an image is imported into the cluster once.
async fn prepare_create(
    e: &AppState,
    mut dest: String,
    targeted: bool,
    req: Request,
) -> Result<(String, Request)> {
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return Ok((dest, req));
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 2 << 20)
        .await
        .map_err(|_| DaemonError::BadRequest("Request body too large".into()))?;
    let Ok(mut create) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        // The member answers a malformed body itself.
        return Ok((dest, Request::from_parts(parts, Body::from(bytes))));
    };
    let mut rewritten = false;
    if let Some(owner) = e.copy_source_member(&create["source"]).await? {
        if !targeted {
            dest = owner.clone();
        }
        if owner != dest {
            e.copy_from_member(&owner, &mut create).await?;
            rewritten = true;
        }
    } else if let Some(source) = e.cluster_image_source(&dest, &create["source"]).await? {
        create["source"] = source;
        rewritten = true;
    }
    if !rewritten {
        return Ok((dest, Request::from_parts(parts, Body::from(bytes))));
    }
    let body = serde_json::to_vec(&create)
        .map_err(|e| DaemonError::failed("encode", "the create request", e))?;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Ok((dest, Request::from_parts(parts, Body::from(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_read_from_the_query() {
        assert_eq!(target_of(Some("target=n2")).as_deref(), Some("n2"));
        assert_eq!(
            target_of(Some("recursion=1&target=n%32")).as_deref(),
            Some("n2")
        );
        assert_eq!(target_of(Some("target=")), None);
        assert_eq!(target_of(None), None);
    }

    #[test]
    fn image_and_alias_changes_are_told_from_reads() {
        let kind = |m: Method, p: &str| match image_write(&m, p) {
            Some(ImageWrite::Image(fp)) => format!("image {fp}"),
            Some(ImageWrite::Alias(name)) => format!("alias {name}"),
            Some(ImageWrite::NewAlias) => "new alias".into(),
            None => "none".into(),
        };
        assert_eq!(kind(Method::DELETE, "/1.0/images/abc"), "image abc");
        assert_eq!(kind(Method::PATCH, "/1.0/images/abc/"), "image abc");
        assert_eq!(kind(Method::POST, "/1.0/images/aliases"), "new alias");
        assert_eq!(kind(Method::POST, "/1.0/images/aliases/a%20b"), "alias a b");
        assert_eq!(kind(Method::DELETE, "/1.0/images/aliases/bb"), "alias bb");
        assert_eq!(kind(Method::GET, "/1.0/images/abc"), "none");
        assert_eq!(kind(Method::POST, "/1.0/images"), "none");
        assert_eq!(kind(Method::POST, "/1.0/images/abc/refresh"), "none");
        assert_eq!(kind(Method::DELETE, "/1.0/images/aliases"), "none");
    }
}
