//! `hutch cluster enable|add|join|list|show|remove|evacuate|restore`, as lxc/cluster.go: the cluster the server is in and its
//! members. hutch's `enable` also takes the etcd endpoints the cluster's state lives in.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::http::{encode, Client};
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum Cmd {
    /// Make this server the first member of a new cluster named NAME (its shared state in
    /// etcd; the server must listen on the network: core.https_address).
    Enable {
        name: String,
        /// etcd client URLs (comma-separated), stored as cluster.etcd_endpoints first.
        #[arg(long)]
        etcd: Option<String>,
    },
    /// Print a join token for a new member NAME (it joins with `hutch cluster join TOKEN`).
    Add { name: String },
    /// Join the cluster a member's token names, as member of the name the token carries
    /// (this server must listen on the network: core.https_address).
    Join { token: String },
    /// List the cluster's members.
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one member.
    Show { name: String },
    /// Move every instance of member NAME to the others (stopped, moved, started again
    /// where it was running) and place none on it until it is restored.
    Evacuate {
        name: String,
        /// Accepted for lxc's command line (hutch does not ask).
        #[arg(long, hide = true)]
        force: bool,
    },
    /// Bring back to member NAME the instances its evacuation moved away.
    Restore {
        name: String,
        #[arg(long, hide = true)]
        force: bool,
    },
    /// Remove member NAME from the cluster (an online member removes itself; an offline
    /// one, or one with instances, needs --force).
    #[command(visible_alias = "rm")]
    Remove {
        name: String,
        /// Remove it even when it is offline or has instances (their places go with it).
        #[arg(short, long)]
        force: bool,
    },
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// lxc's refusal when the server is standalone.
fn require_clustered(client: &Client) -> Result<()> {
    let cluster = client.get("/1.0/cluster")?;
    if !cluster["enabled"].as_bool().unwrap_or(false) {
        bail!("LXD server isn't part of a cluster");
    }
    Ok(())
}

pub fn run(client: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Enable { name, etcd } => {
            let cluster = client.get("/1.0/cluster")?;
            if cluster["enabled"].as_bool().unwrap_or(false) {
                bail!("This LXD server is already clustered");
            }
            if let Some(endpoints) = etcd {
                let body = json!({"config": {"cluster.etcd_endpoints": endpoints}});
                client.request("PATCH", "/1.0", Some(&body))?;
            }
            let body = json!({"server_name": name, "enabled": true});
            client.run("PUT", "/1.0/cluster", Some(&body))?;
            println!("Clustering enabled");
        }
        Cmd::Add { name } => {
            require_clustered(client)?;
            let env = client.request(
                "POST",
                "/1.0/cluster/members",
                Some(&json!({"server_name": name})),
            )?;
            let meta = &env.metadata["metadata"];
            // lxc's ClusterMemberJoinToken, in its field order.
            let token = json!({
                "server_name": meta["serverName"],
                "fingerprint": meta["fingerprint"],
                "addresses": meta["addresses"],
                "secret": meta["secret"],
                "expires_at": meta["expiresAt"],
            });
            let token = hutch_tls::base64_encode(serde_json::to_string(&token)?.as_bytes());
            println!("Member {name} join token:\n{token}");
        }
        Cmd::Evacuate { ref name, .. } | Cmd::Restore { ref name, .. } => {
            require_clustered(client)?;
            let action = if matches!(cmd, Cmd::Evacuate { .. }) {
                "evacuate"
            } else {
                "restore"
            };
            client.run(
                "POST",
                &format!("/1.0/cluster/members/{}/state", encode(name)),
                Some(&json!({"action": action})),
            )?;
            let done = if action == "evacuate" {
                "evacuated"
            } else {
                "restored"
            };
            println!("Member {name} {done}");
        }
        Cmd::Remove { name, force } => {
            require_clustered(client)?;
            let force = if force { "?force=1" } else { "" };
            client.request(
                "DELETE",
                &format!("/1.0/cluster/members/{}{force}", encode(&name)),
                None,
            )?;
            println!("Member {name} removed");
        }
        Cmd::Join { token } => {
            let raw = hutch_tls::base64_decode(token.trim())
                .ok_or_else(|| anyhow::anyhow!("Invalid cluster join token"))?;
            let decoded: Value = serde_json::from_slice(&raw)?;
            let name = s(&decoded["server_name"]);
            let address = s(&decoded["addresses"][0]);
            let body = json!({
                "server_name": name,
                "enabled": true,
                "cluster_address": address,
                "cluster_token": token.trim(),
            });
            client.run("PUT", "/1.0/cluster", Some(&body))?;
            println!("Joined the cluster as {name}");
        }
        Cmd::List { format } => {
            require_clustered(client)?;
            let members = client.get("/1.0/cluster/members?recursion=1")?;
            let headers: Vec<String> = [
                "NAME",
                "URL",
                "ROLES",
                "ARCHITECTURE",
                "FAILURE DOMAIN",
                "DESCRIPTION",
                "STATE",
                "MESSAGE",
            ]
            .iter()
            .map(|h| h.to_string())
            .collect();
            let joiner = if format == Format::Csv { "," } else { "\n" };
            let rows: Vec<Vec<String>> = members
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let roles: Vec<String> =
                        m["roles"].as_array().into_iter().flatten().map(s).collect();
                    vec![
                        s(&m["server_name"]),
                        s(&m["url"]),
                        roles.join(joiner),
                        s(&m["architecture"]),
                        s(&m["failure_domain"]),
                        s(&m["description"]),
                        s(&m["status"]).to_uppercase(),
                        s(&m["message"]),
                    ]
                })
                .collect();
            print!("{}", output::render(format, &headers, &rows, &members)?);
        }
        Cmd::Show { name } => {
            require_clustered(client)?;
            let member = client.get(&format!("/1.0/cluster/members/{}", encode(&name)))?;
            print!("{}", serde_yaml::to_string(&member)?);
        }
    }
    Ok(())
}
