//! The `ports` shorthand: `"8080:80"` as a proxy device, as `docker run -p` reads it.

use super::model::Map;

/// A host port forwarded into an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub port: u16,
}

impl Port {
    /// `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]` or `PORT` (the same on both sides). The host
    /// side listens on 0.0.0.0 unless an address is given, as `docker run -p` does.
    pub fn parse(spec: &str) -> Result<Port, String> {
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
            Some((_, other)) => return Err(format!("unknown protocol {other:?} (tcp or udp)")),
            None => (spec, "tcp"),
        };
        let port = |s: &str| -> Result<u16, String> {
            s.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?} is not a port number"))
        };
        let (host_ip, host, inner) = match ports.rsplitn(3, ':').collect::<Vec<_>>()[..] {
            [p] => ("0.0.0.0", p, p),
            [inner, host] => ("0.0.0.0", host, inner),
            [inner, host, ip] => (ip, host, inner),
            _ => return Err("expected [HOST_IP:]HOST_PORT:PORT".into()),
        };
        let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
        if host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{host_ip:?} is not an IP address"));
        }
        Ok(Port {
            proto: proto.into(),
            host_ip: host_ip.into(),
            host_port: port(host)?,
            port: port(inner)?,
        })
    }

    /// The proxy device's name: `port-8080`, `port-53-udp`.
    pub fn device_name(&self) -> String {
        match self.proto.as_str() {
            "tcp" => format!("port-{}", self.host_port),
            p => format!("port-{}-{p}", self.host_port),
        }
    }

    pub fn device(&self) -> Map {
        let listen = if self.host_ip.contains(':') {
            format!("{}:[{}]:{}", self.proto, self.host_ip, self.host_port)
        } else {
            format!("{}:{}:{}", self.proto, self.host_ip, self.host_port)
        };
        Map::from([
            ("type".into(), "proxy".into()),
            ("listen".into(), listen),
            (
                "connect".into(),
                format!("{}:127.0.0.1:{}", self.proto, self.port),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_as_docker_reads_them() {
        let p = Port::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.port),
            ("0.0.0.0", 8080, 80)
        );
        assert_eq!(p.device()["listen"], "tcp:0.0.0.0:8080");
        let p = Port::parse("53:5353/udp").unwrap();
        assert_eq!(p.device_name(), "port-53-udp");
        assert_eq!(p.device()["connect"], "udp:127.0.0.1:5353");
        assert_eq!(Port::parse("22").unwrap().host_port, 22);
        assert_eq!(
            Port::parse("[::1]:80:8080").unwrap().device()["listen"],
            "tcp:[::1]:80"
        );
        for bad in ["x:80", "80:0", "1.2.3:80:80", "80:80/sctp", "70000"] {
            assert!(Port::parse(bad).is_err(), "{bad}");
        }
    }
}
