#!/bin/bash
# Runs the benchmark harness (release build) as root: a fresh hutchd per storage driver,
# each operation driven by hutch and by LXD's lxc, medians with min and max; the table goes
# to stdout and the numbers to bench-results.json. Extra arguments go to hutch-bench
# (--runs N, --drivers btrfs,dir, --clients hutch,lxc, --list-sizes N,M, --json FILE,
# --pause-ms MS, --lxd-dir DIR; --only basic,throughput,list,debian,remote,https,copy,backup
# for some groups of rows; --only scale [--scale N] for the 1,000-container rows;
# --soak N [--soak-out DIR] for the soak with its CSV and PNG plots; --daemon-log FILE keeps
# hutchd's log, with RUST_LOG=hutchd=debug the steps of each start).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p hutchd -p hutch-helper -p hutch -p hutch-bench
exec target/release/hutch-bench "$@"
