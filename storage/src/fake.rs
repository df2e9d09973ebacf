//! A recording [`CommandRunner`] for tests: it fails the commands it is told to, and, when
//! given a [`FakeWorld`], acts out the storage tools (btrfs subvolumes as directories on
//! disk, zfs datasets, snapshots and zpools as names) so a test sees what a failure left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use crate::error::StorageError;
use crate::runner::CommandRunner;

/// Records every command. It can be told to fail the Nth command (counting from 1), or
/// every command that has a given argument, and to answer commands that start with a
/// given line with a given output.
#[derive(Debug, Default)]
pub struct FakeRunner {
    pub calls: Mutex<Vec<Vec<String>>>,
    /// Fail every command with this argument.
    pub fail_on: Mutex<Option<String>>,
    /// Fail the command with this number (1 is the first), and only that one.
    pub fail_nth: Mutex<Option<usize>>,
    /// `(prefix, stdout)`: a command whose line starts with `prefix` prints `stdout`.
    pub replies: Mutex<Vec<(String, String)>>,
    /// Where set, the commands that succeed change it as the real tools would.
    pub world: Mutex<Option<FakeWorld>>,
}

/// What the storage tools have made: zfs datasets (with their origin snapshot, if clones),
/// snapshots and zpools. Btrfs subvolumes are directories on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FakeWorld {
    /// Dataset name to the snapshot it was cloned from.
    pub datasets: BTreeMap<String, Option<String>>,
    pub snapshots: BTreeSet<String>,
    pub zpools: BTreeSet<String>,
}

impl FakeRunner {
    /// A fake that fails its `n`th command.
    pub fn failing_nth(n: usize) -> Self {
        FakeRunner {
            fail_nth: Mutex::new(Some(n)),
            ..Default::default()
        }
    }

    /// A fake acting out the tools on `world`.
    pub fn with_world(world: FakeWorld) -> Self {
        FakeRunner {
            world: Mutex::new(Some(world)),
            ..Default::default()
        }
    }

    /// Commands whose line starts with `prefix` print `stdout`.
    pub fn reply(&self, prefix: &str, stdout: &str) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((prefix.to_string(), stdout.to_string()));
    }

    /// The commands run so far, each as one line.
    pub fn lines(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.join(" "))
            .collect()
    }

    /// The world as the commands left it.
    pub fn world(&self) -> Option<FakeWorld> {
        self.world.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn failure(argv: &[String], stderr: &str) -> StorageError {
    StorageError::Command {
        program: argv.join(" "),
        status: "exit status: 1".into(),
        code: Some(1),
        stderr: stderr.into(),
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, argv: &[String]) -> Result<String, StorageError> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.push(argv.to_vec());
            calls.len()
        };
        if *self.fail_nth.lock().unwrap_or_else(|e| e.into_inner()) == Some(n) {
            return Err(failure(argv, "injected"));
        }
        let word = self.fail_on.lock().unwrap_or_else(|e| e.into_inner());
        if word.as_ref().is_some_and(|w| argv.iter().any(|a| a == w)) {
            return Err(failure(argv, "injected"));
        }
        if let Some(world) = self
            .world
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let out = world.act(argv).map_err(|stderr| failure(argv, &stderr))?;
            if let Some(out) = out {
                return Ok(out);
            }
        }
        let line = argv.join(" ");
        Ok(self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, out)| out.clone())
            .unwrap_or_default())
    }
}

impl FakeWorld {
    /// Whether nothing is left below dataset (or zpool) `name`.
    pub fn is_empty_below(&self, name: &str) -> bool {
        let below = |n: &String| n == name || n.starts_with(&format!("{name}/"));
        !self.datasets.keys().any(below)
            && !self
                .snapshots
                .iter()
                .any(|s| below(&s.split('@').next().unwrap_or_default().to_string()))
    }

    /// Does what a successful `argv` would, answering what it prints where that matters;
    /// an `Err` is the tool's complaint.
    fn act(&mut self, argv: &[String]) -> Result<Option<String>, String> {
        if let ["zfs", "list", "-H", "-o", "name,origin", name] = argv
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            self.exists(name)?;
            let origin = self.datasets.get(*name).cloned().flatten();
            return Ok(Some(format!(
                "{name}\t{}\n",
                origin.as_deref().unwrap_or("-")
            )));
        }
        self.change(argv).map(|()| None)
    }

    fn change(&mut self, argv: &[String]) -> Result<(), String> {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let last = args.last().copied().unwrap_or_default();
        match args.as_slice() {
            ["btrfs", "subvolume", "create", path] => {
                std::fs::create_dir(path).map_err(|e| e.to_string())
            }
            ["btrfs", "subvolume", "snapshot", .., from, to] => {
                if !Path::new(from).is_dir() {
                    return Err(format!("{from}: no such subvolume"));
                }
                std::fs::create_dir(to).map_err(|e| e.to_string())
            }
            ["btrfs", "subvolume", "delete", path] => {
                std::fs::remove_dir_all(path).map_err(|e| e.to_string())
            }
            ["zpool", "create", .., name, _file] => {
                self.zpools.insert(name.to_string());
                self.datasets.insert(name.to_string(), None);
                Ok(())
            }
            ["zpool", "import", .., name] => {
                self.zpools.insert(name.to_string());
                self.datasets.insert(name.to_string(), None);
                Ok(())
            }
            ["zpool", "list", ..] => self.exists(last),
            ["zpool", "destroy", .., name] => {
                self.exists(name)?;
                self.zpools.remove(*name);
                self.remove_below(name);
                Ok(())
            }
            ["zfs", "list", "-H", "-o", "name", name] => self.exists(name),
            ["zfs", "create", "-p", .., name] => {
                self.datasets.insert(name.to_string(), None);
                Ok(())
            }
            ["zfs", "snapshot", snap] => {
                let (ds, _) = snap.split_once('@').ok_or("not a snapshot")?;
                self.exists(ds)?;
                self.snapshots.insert(snap.to_string());
                Ok(())
            }
            ["zfs", "clone", .., snap, name] => {
                if !self.snapshots.contains(*snap) {
                    return Err(format!("{snap}: no such snapshot"));
                }
                self.datasets
                    .insert(name.to_string(), Some(snap.to_string()));
                Ok(())
            }
            ["zfs", "destroy", .., name] => self.destroy(name, args.contains(&"-r")),
            ["zfs", "rename", .., from, to] => {
                self.exists(from)?;
                let moved: Vec<(String, Option<String>)> = self
                    .datasets
                    .iter()
                    .filter(|(n, _)| *n == from || n.starts_with(&format!("{from}/")))
                    .map(|(n, o)| (n.clone(), o.clone()))
                    .collect();
                for (n, origin) in moved {
                    self.datasets.remove(&n);
                    self.datasets
                        .insert(format!("{to}{}", &n[from.len()..]), origin);
                }
                let snaps: Vec<String> = self
                    .snapshots
                    .iter()
                    .filter(|s| s.starts_with(&format!("{from}@")))
                    .cloned()
                    .collect();
                for s in snaps {
                    self.snapshots.remove(&s);
                    self.snapshots.insert(format!("{to}{}", &s[from.len()..]));
                }
                Ok(())
            }
            ["zfs", "set", .., name] => self.exists(name),
            _ => Ok(()),
        }
    }

    fn exists(&self, name: &str) -> Result<(), String> {
        if self.datasets.contains_key(name) || self.snapshots.contains(name) {
            Ok(())
        } else {
            Err(format!("cannot open '{name}': dataset does not exist"))
        }
    }

    /// `zfs destroy [-r]`: refused while a clone comes from a snapshot being destroyed.
    fn destroy(&mut self, name: &str, recursive: bool) -> Result<(), String> {
        self.exists(name)?;
        let doomed = |n: &str| {
            n == name
                || (recursive
                    && (n.starts_with(&format!("{name}/")) || n.starts_with(&format!("{name}@"))))
        };
        let busy = self
            .datasets
            .iter()
            .any(|(n, origin)| !doomed(n) && origin.as_deref().is_some_and(&doomed));
        if busy {
            return Err(format!(
                "cannot destroy '{name}': filesystem has dependent clones"
            ));
        }
        self.datasets.retain(|n, _| !doomed(n));
        self.snapshots.retain(|s| !doomed(s));
        Ok(())
    }

    fn remove_below(&mut self, name: &str) {
        let below = |n: &str| n == name || n.starts_with(&format!("{name}/"));
        self.datasets.retain(|n, _| !below(n));
        self.snapshots
            .retain(|s| !below(s.split('@').next().unwrap_or_default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn the_fake_fails_only_its_nth_command_and_answers_replies() {
        let r = FakeRunner::failing_nth(2);
        r.reply("blkid", "btrfs\n");
        assert_eq!(r.run(&argv("blkid -o value /dev/x")).unwrap(), "btrfs\n");
        assert!(r.run(&argv("mkfs.btrfs -q /dev/x")).is_err());
        assert_eq!(r.run(&argv("mkfs.btrfs -q /dev/x")).unwrap(), "");
        assert_eq!(r.lines().len(), 3);
    }

    #[test]
    fn the_world_keeps_clones_and_their_origins() {
        let r = FakeRunner::with_world(FakeWorld::default());
        r.run(&argv("zpool create -m none p /f")).unwrap();
        r.run(&argv("zfs create -p -o mountpoint=/m p/images/a"))
            .unwrap();
        r.run(&argv("zfs snapshot p/images/a@s")).unwrap();
        r.run(&argv("zfs clone -p p/images/a@s p/containers/c"))
            .unwrap();
        assert!(r.run(&argv("zfs destroy -r p/images/a")).is_err());
        r.run(&argv("zfs destroy -r p/containers/c")).unwrap();
        r.run(&argv("zfs destroy -r p/images/a")).unwrap();
        assert!(r.run(&argv("zfs list -H -o name p/images/a")).is_err());
        r.run(&argv("zpool destroy -f p")).unwrap();
        assert_eq!(r.world().unwrap(), FakeWorld::default());
    }
}
