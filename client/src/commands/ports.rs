//! `hutch launch --ports`: ports of an instance published on the host as proxy devices,
//! each spec as `docker run -p` (and a stack's `ports:`) reads it ([`Port::parse`]);
//! `all` publishes every port the OCI image exposes (`image.oci.exposed_ports`) on the
//! same number.

use anyhow::{anyhow, Result};
use serde_json::{Map, Value};

use crate::stack::ports::Port;

/// What `--ports` asked for: explicit mappings, and whether the image's exposed ports too.
#[derive(Debug, Default, PartialEq)]
pub struct Ports {
    pub maps: Vec<Port>,
    pub exposed: bool,
}

/// Parses every `--ports` value (each a comma-separated list).
pub fn parse(values: &[String]) -> Result<Ports> {
    let mut ports = Ports::default();
    for spec in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        match spec {
            "" => {}
            "all" => ports.exposed = true,
            _ => ports
                .maps
                .push(Port::parse(spec).map_err(|e| anyhow!("Invalid --ports {spec:?}: {e}"))?),
        }
    }
    Ok(ports)
}

/// The ports an instance's OCI image exposes (`80/tcp,53/udp`), each on the same host
/// port, leaving out those `taken` already publishes (by whatever host port).
pub fn exposed(config: &Value, taken: &[Port]) -> Result<Vec<Port>> {
    let list = config["image.oci.exposed_ports"]
        .as_str()
        .unwrap_or_default();
    let mut maps = Vec::new();
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = Port::parse(p).map_err(|e| anyhow!("The image's exposed port {p:?}: {e}"))?;
        let clash = |m: &Port| m.port == port.port && m.proto == port.proto;
        if !taken.iter().any(clash) {
            maps.push(port);
        }
    }
    Ok(maps)
}

/// The proxy devices of `maps`, as a create or PATCH body holds them.
pub fn devices(maps: &[Port]) -> Map<String, Value> {
    maps.iter()
        .map(|p| {
            (
                p.device_name(),
                serde_json::to_value(p.device()).unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_all_are_read() {
        let p = parse(&["8080:80,53/udp".into(), "all".into()]).unwrap();
        assert!(p.exposed);
        assert_eq!(p.maps.len(), 2);
        let devices = devices(&p.maps);
        assert_eq!(devices["port-8080"]["listen"], "tcp:0.0.0.0:8080");
        assert_eq!(devices["port-53-udp"]["connect"], "udp:127.0.0.1:53");
        let err = parse(&["80/sctp".into()]).unwrap_err().to_string();
        assert!(err.contains("--ports \"80/sctp\""), "{err}");
    }

    #[test]
    fn exposed_ports_skip_those_given() {
        let config = json!({"image.oci.exposed_ports": "80/tcp,53/udp"});
        let given = [Port::parse("8000:80").unwrap()];
        let maps = exposed(&config, &given).unwrap();
        assert_eq!(maps, [Port::parse("53/udp").unwrap()]);
        assert!(exposed(&json!({}), &[]).unwrap().is_empty());
    }
}
