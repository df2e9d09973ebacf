//! What about the host moves the rows, printed above them and kept in the JSON: the
//! kernel, the CPUs and the cgroup layout. On a hybrid host each exec's move into the v1
//! cgroups waits for an RCU grace period unless cgroup2 is mounted with `favordynmods`
//! (README, Performance), so exec rows of hosts that differ there do not compare.

use serde_json::{json, Value};

/// The cgroup layout that `/proc/mounts` shows, and whether a cgroup mount has
/// `favordynmods`. On kernels with the per-threadgroup lock a remount without the option
/// clears the flag but keeps its effect until reboot; that cannot be seen here.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupMounts {
    pub layout: &'static str,
    pub favordynmods: bool,
}

pub fn cgroup_mounts(mounts: &str) -> CgroupMounts {
    let (mut v1, mut v2, mut favordynmods) = (false, false, false);
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, _, fstype, options, ..] = fields[..] else {
            continue;
        };
        match fstype {
            "cgroup" => v1 = true,
            "cgroup2" => v2 = true,
            _ => continue,
        }
        favordynmods |= options.split(',').any(|o| o == "favordynmods");
    }
    let layout = match (v1, v2) {
        (true, true) => "hybrid",
        (false, true) => "unified",
        (true, false) => "v1",
        (false, false) => "none",
    };
    CgroupMounts {
        layout,
        favordynmods,
    }
}

/// The facts of this host, as JSON.
pub fn facts() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cgroup = cgroup_mounts(&read("/proc/mounts"));
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cgroup": cgroup.layout,
        "favordynmods": cgroup.favordynmods,
    })
}

/// One line for the top of the table.
pub fn describe(facts: &Value) -> String {
    format!(
        "host: Linux {}, {} CPUs, cgroup {}{}",
        facts["kernel"].as_str().unwrap_or("?"),
        facts["cpus"],
        facts["cgroup"].as_str().unwrap_or("?"),
        if facts["favordynmods"] == true {
            " with favordynmods"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_the_option_are_read_from_the_mounts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup_mounts(hybrid),
            CgroupMounts {
                layout: "hybrid",
                favordynmods: false
            }
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate,favordynmods 0 0\n";
        assert_eq!(
            cgroup_mounts(unified),
            CgroupMounts {
                layout: "unified",
                favordynmods: true
            }
        );
        // An option of another filesystem is not the cgroup's.
        let other = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\nx /x ext4 favordynmods 0 0\n";
        assert_eq!(
            cgroup_mounts(other),
            CgroupMounts {
                layout: "v1",
                favordynmods: false
            }
        );
        assert_eq!(cgroup_mounts("").layout, "none");
    }

    #[test]
    fn the_line_names_the_option_only_when_set() {
        let mut f =
            json!({"kernel": "6.1.0", "cpus": 2, "cgroup": "hybrid", "favordynmods": false});
        assert_eq!(describe(&f), "host: Linux 6.1.0, 2 CPUs, cgroup hybrid");
        f["favordynmods"] = json!(true);
        assert_eq!(
            describe(&f),
            "host: Linux 6.1.0, 2 CPUs, cgroup hybrid with favordynmods"
        );
    }
}
