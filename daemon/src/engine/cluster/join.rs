//! Joining a cluster with a token: the joiner reaches the member the token names over
//! HTTPS, checks that member's certificate against the token's fingerprint, has its own
//! certificate trusted with the token's secret (`POST /1.0/certificates`, as LXD's joins
//! do), and reads where the cluster's state lives (`GET /internal/cluster`, for trusted
//! callers). Blocking (ureq): run it on a blocking thread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hutch_api::cluster::{ClusterJoinInfo, ClusterJoinToken};

use crate::error::{DaemonError, Result};

/// The token in `text` (base64 of its JSON), checked for what a join needs.
pub fn decode_token(text: &str) -> Result<ClusterJoinToken> {
    let bad = || DaemonError::BadRequest("Invalid cluster join token".into());
    let json = hutch_tls::base64_decode(text.trim()).ok_or_else(bad)?;
    let t: ClusterJoinToken = serde_json::from_slice(&json).map_err(|_| bad())?;
    if t.server_name.is_empty() || t.addresses.is_empty() || t.secret.is_empty() {
        return Err(bad());
    }
    if !t.expires_at.is_empty() {
        let at = time::OffsetDateTime::parse(
            &t.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| bad())?;
        if time::OffsetDateTime::now_utc() > at {
            return Err(DaemonError::BadRequest("The join token has expired".into()));
        }
    }
    Ok(t)
}

fn agent(
    trust: hutch_tls::ServerTrust,
    identity: Option<&hutch_tls::Identity>,
) -> Result<ureq::Agent> {
    let tls = hutch_tls::client_config(trust, identity)
        .map_err(|e| DaemonError::failed("set up", "TLS to the cluster member", e))?;
    Ok(ureq::AgentBuilder::new()
        .tls_config(tls)
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("hutch/", env!("CARGO_PKG_VERSION")))
        .build())
}

fn unreachable(address: &str, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::BadRequest(format!(
        "Failed to reach the cluster member at {address}: {e}"
    ))
}

/// The member's answer as an error: its envelope's message.
fn refused(address: &str, e: ureq::Error) -> DaemonError {
    match e {
        ureq::Error::Status(code, resp) => {
            let body: serde_json::Value = resp
                .into_string()
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let msg = body["error"].as_str().unwrap_or("refused").to_string();
            if code == 403 {
                DaemonError::Forbidden(format!(
                    "The cluster member at {address} refused the join: {msg}"
                ))
            } else {
                DaemonError::BadRequest(format!(
                    "The cluster member at {address} refused the join: {msg}"
                ))
            }
        }
        other => unreachable(address, other),
    }
}

/// Has `identity` trusted by the member `token` names (under `name`) and returns where the
/// cluster's state lives.
pub fn request(
    token: &ClusterJoinToken,
    name: &str,
    identity: &hutch_tls::Identity,
) -> Result<ClusterJoinInfo> {
    let address = &token.addresses[0];
    let base = format!("https://{address}");
    // First contact: record the member's certificate, then hold it to the token.
    let seen = Arc::new(Mutex::new(None));
    let probe = agent(hutch_tls::ServerTrust::Record(seen.clone()), None)?;
    let _ = probe.get(&format!("{base}/1.0")).call();
    let der = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| unreachable(address, "no TLS certificate"))?;
    if hutch_tls::fingerprint(&der) != token.fingerprint {
        return Err(DaemonError::Forbidden(format!(
            "The certificate of {address} does not match the join token's fingerprint"
        )));
    }
    let member = agent(hutch_tls::ServerTrust::Pinned(der), Some(identity))?;
    let trust_me = serde_json::json!({"type": "server", "name": name, "password": token.secret});
    member
        .post(&format!("{base}/1.0/certificates"))
        .set("Content-Type", "application/json")
        .send_string(&trust_me.to_string())
        .map_err(|e| refused(address, e))?;
    let answer = member
        .get(&format!("{base}/internal/cluster"))
        .call()
        .map_err(|e| refused(address, e))?
        .into_string()
        .map_err(|e| unreachable(address, e))?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| unreachable(address, e))?;
    serde_json::from_value(answer["metadata"].clone()).map_err(|e| {
        DaemonError::failed("read", format!("the cluster's details from {address}"), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(t: &ClusterJoinToken) -> String {
        hutch_tls::base64_encode(&serde_json::to_vec(t).unwrap())
    }

    #[test]
    fn tokens_are_read_as_lxc_prints_them() {
        let t = ClusterJoinToken {
            server_name: "n2".into(),
            fingerprint: "ab".into(),
            addresses: vec!["127.0.0.1:8443".into()],
            secret: "s".into(),
            expires_at: "2999-01-01T00:00:00Z".into(),
        };
        assert_eq!(decode_token(&encode(&t)).unwrap(), t);
        let old = ClusterJoinToken {
            expires_at: "2001-01-01T00:00:00Z".into(),
            ..t.clone()
        };
        assert!(decode_token(&encode(&old))
            .unwrap_err()
            .to_string()
            .contains("expired"));
        let empty = ClusterJoinToken {
            addresses: vec![],
            ..t
        };
        assert!(decode_token(&encode(&empty)).is_err());
        assert!(decode_token("not base64!").is_err());
    }
}
