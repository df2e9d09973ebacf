//! Host shutdown (`hutchd shutdown`, SIGPWR): every running instance is stopped, highest
//! `boot.stop.priority` first and equal priorities side by side, each given
//! `boot.host_shutdown_timeout` seconds (default 30) to halt before it is killed. Their
//! power state stays RUNNING, so the next daemon start brings them back (as LXD).

use std::collections::BTreeMap;
use std::time::Duration;

use hutch_api::operation::StatusCode;

use super::spec::expand;
use super::{runtime_status, Engine};
use crate::error::Result;

/// `boot.host_shutdown_timeout` when unset, as LXD.
const DEFAULT_TIMEOUT: u64 = 30;

/// One running instance, as host shutdown sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToStop {
    pub name: String,
    pub priority: i64,
    pub timeout: Duration,
}

impl ToStop {
    /// From an instance's expanded config.
    pub fn from_config(name: &str, config: &BTreeMap<String, String>) -> Self {
        ToStop {
            name: name.to_string(),
            priority: config
                .get("boot.stop.priority")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            timeout: Duration::from_secs(
                config
                    .get("boot.host_shutdown_timeout")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_TIMEOUT),
            ),
        }
    }
}

/// The groups to stop one after another: highest priority first; within a group, name
/// order (they stop side by side).
pub fn stop_plan(mut instances: Vec<ToStop>) -> Vec<Vec<ToStop>> {
    instances.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    let mut groups: Vec<Vec<ToStop>> = Vec::new();
    for i in instances {
        match groups.last_mut() {
            Some(group) if group[0].priority == i.priority => group.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

impl Engine {
    /// Stops every running instance in `boot.stop.priority` order, then asks the daemon to
    /// exit. Nothing is started or restarted from the moment it begins.
    pub async fn shutdown_host(&self) -> Result<()> {
        if !self.supervision.begin_shutdown() {
            // Another request began it: the daemon exits when that one is done.
            return Ok(());
        }
        let mut running = Vec::new();
        for row in self.db.instances()? {
            if runtime_status(self, &row.name).0 == StatusCode::Stopped {
                continue;
            }
            let config = match expand(self, &row) {
                Ok(x) => x.config,
                Err(_) => row.config.clone(),
            };
            running.push(ToStop::from_config(&row.name, &config));
        }
        tracing::info!(
            instances = running.len(),
            "host shutdown: stopping instances"
        );
        for group in stop_plan(running) {
            let priority = group[0].priority;
            let stops: Vec<_> = group
                .into_iter()
                .map(|i| {
                    let e = self.clone();
                    tokio::spawn(async move {
                        let res =
                            super::lifecycle::stop_for_host_shutdown(e, i.name.clone(), i.timeout)
                                .await;
                        (i.name, res)
                    })
                })
                .collect();
            for stop in stops {
                match stop.await {
                    Ok((name, Ok(()))) => {
                        tracing::info!(instance = %name, priority, "stopped for host shutdown")
                    }
                    Ok((name, Err(err))) => {
                        tracing::warn!(instance = %name, error = %err.chain(), "stop for host shutdown failed")
                    }
                    Err(err) => tracing::warn!(error = %err, "stop for host shutdown failed"),
                }
            }
        }
        tracing::info!("host shutdown: every instance stopped; the daemon exits");
        self.supervision.request_exit();
        Ok(())
    }

    /// Returns once a host shutdown is done and the daemon should exit.
    pub async fn exit_requested(&self) {
        self.supervision.exit_requested().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(plan: &[Vec<ToStop>]) -> Vec<Vec<&str>> {
        plan.iter()
            .map(|g| g.iter().map(|i| i.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn higher_priorities_stop_first_and_equal_ones_together() {
        let plan = stop_plan(vec![
            ToStop::from_config("low", &cfg(&[])),
            ToStop::from_config("b", &cfg(&[("boot.stop.priority", "10")])),
            ToStop::from_config("mid", &cfg(&[("boot.stop.priority", "5")])),
            ToStop::from_config("a", &cfg(&[("boot.stop.priority", "10")])),
            ToStop::from_config("neg", &cfg(&[("boot.stop.priority", "-3")])),
            ToStop::from_config("zero", &cfg(&[("boot.stop.priority", "0")])),
        ]);
        assert_eq!(
            names(&plan),
            vec![
                vec!["a", "b"],
                vec!["mid"],
                vec!["low", "zero"],
                vec!["neg"]
            ]
        );
        assert!(stop_plan(Vec::new()).is_empty());
    }

    #[test]
    fn the_timeout_is_the_instances_own_or_thirty_seconds() {
        let own = ToStop::from_config("a", &cfg(&[("boot.host_shutdown_timeout", "5")]));
        assert_eq!(own.timeout, Duration::from_secs(5));
        let default = ToStop::from_config("b", &cfg(&[("boot.host_shutdown_timeout", "x")]));
        assert_eq!(default.timeout, Duration::from_secs(30));
        assert_eq!(default.priority, 0);
    }
}
