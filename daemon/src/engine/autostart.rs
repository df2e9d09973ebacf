//! At daemon start: bring back the instances that should run — `boot.autostart=true`, or
//! `boot.autostart` unset and running when the host went down — highest
//! `boot.autostart.priority` first, waiting `boot.autostart.delay` seconds after each.

use std::time::Duration;

use hutch_api::config::parse_bool;
use hutch_api::operation::StatusCode;

use super::{runtime_status, start_instance};
use crate::daemon::AppState;
use crate::db::instances::InstanceRow;

/// Whether an instance should be started at daemon start, and its priority and delay.
pub fn autostart_plan(rows: &[InstanceRow]) -> Vec<(String, i64, u64)> {
    let mut plan: Vec<(String, i64, u64)> = rows
        .iter()
        .filter(|r| {
            match r
                .config
                .get("boot.autostart")
                .map(|v| parse_bool(v).unwrap_or(false))
            {
                Some(wanted) => wanted,
                None => {
                    r.config
                        .get("volatile.last_state.power")
                        .map(String::as_str)
                        == Some("RUNNING")
                }
            }
        })
        .map(|r| {
            let prio = r
                .config
                .get("boot.autostart.priority")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let delay = r
                .config
                .get("boot.autostart.delay")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (r.name.clone(), prio, delay)
        })
        .collect();
    // Stable: equal priorities keep name order.
    plan.sort_by_key(|p| std::cmp::Reverse(p.1));
    plan
}

/// Starts what the plan says, in the background.
pub fn autostart(d: AppState) {
    tokio::spawn(async move {
        // Instances that stopped by themselves while no daemon ran are judged first: a
        // `poweroff` inside is not undone here, an autorestart is done here.
        super::watch::settle_exits_while_away(&d).await;
        let mut rows = match d.db.instances() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "autostart: cannot list instances");
                return;
            }
        };
        // The boot.* keys may come from profiles, as in LXD.
        for row in &mut rows {
            if let Ok(expanded) = super::spec::expand(&d, row) {
                row.config = expanded.config;
            }
        }
        for (name, _, delay) in autostart_plan(&rows) {
            if runtime_status(&d, &name).0 != StatusCode::Stopped {
                continue;
            }
            match start_instance(d.clone(), name.clone()).await {
                Ok(()) => tracing::info!(instance = %name, "autostarted"),
                Err(e) => tracing::warn!(instance = %name, error = %e.chain(), "autostart failed"),
            }
            if delay > 0 {
                tokio::time::sleep(Duration::from_secs(delay)).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(name: &str, cfg: &[(&str, &str)]) -> InstanceRow {
        InstanceRow {
            name: name.into(),
            kind: "container".into(),
            architecture: "x86_64".into(),
            ephemeral: false,
            stateful: false,
            description: String::new(),
            created_at: String::new(),
            last_used_at: String::new(),
            config: cfg
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            devices: Default::default(),
            profiles: vec![],
            state: "ready".into(),
            pool: "default".into(),
        }
    }

    #[test]
    fn plan_follows_autostart_last_state_and_priority() {
        let rows = vec![
            row("a", &[("boot.autostart", "true")]),
            row("b", &[("volatile.last_state.power", "RUNNING")]),
            row("c", &[("volatile.last_state.power", "STOPPED")]),
            row(
                "d",
                &[
                    ("boot.autostart", "false"),
                    ("volatile.last_state.power", "RUNNING"),
                ],
            ),
            row(
                "e",
                &[
                    ("boot.autostart", "true"),
                    ("boot.autostart.priority", "10"),
                    ("boot.autostart.delay", "2"),
                ],
            ),
        ];
        let plan = autostart_plan(&rows);
        assert_eq!(
            plan,
            vec![
                ("e".to_string(), 10, 2),
                ("a".to_string(), 0, 0),
                ("b".to_string(), 0, 0)
            ]
        );
    }
}
