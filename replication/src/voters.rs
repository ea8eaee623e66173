//! The metadata quorum's voters as the operator gives them (`--voters 1@host:9192,2@...`,
//! KRaft's `controller.quorum.voters`), checked so that a typo is an error naming the entry,
//! never a cluster that cannot elect.

use std::fmt;

use crate::metadata::BrokerId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: BrokerId,
    /// host:port of its cluster listener.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.id, self.host, self.port)
    }
}

impl Voter {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

const FORM: &str = "expected a comma-separated list of ID@HOST:PORT, e.g. 1@10.0.0.1:9192,2@10.0.0.2:9192,3@10.0.0.3:9192";

/// Parses a voter list; every error names the entry and the expected form.
pub fn parse(list: &str) -> Result<Vec<Voter>, String> {
    let list = list.trim();
    if list.is_empty() {
        return Err(format!("the voter list is empty: {FORM}"));
    }
    let mut voters: Vec<Voter> = Vec::new();
    for raw in list.split(',') {
        let entry = raw.trim();
        let Some((id, addr)) = entry.split_once('@') else {
            return Err(format!("voter '{entry}' has no '@': {FORM}"));
        };
        let id: BrokerId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("voter '{entry}': '{id}' is not a node id (0 or more)"))?;
        let Some((host, port)) = addr.trim().rsplit_once(':') else {
            return Err(format!("voter '{entry}': '{addr}' has no port: {FORM}"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!(
                "voter '{entry}': '{host}' is not a host name or address"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("voter '{entry}': '{port}' is not a port (1-65535)"))?;
        if let Some(v) = voters.iter().find(|v| v.id == id) {
            return Err(format!("node id {id} is given twice ('{v}' and '{entry}')"));
        }
        if let Some(v) = voters.iter().find(|v| v.host == host && v.port == port) {
            return Err(format!("'{v}' and '{entry}' have the same address"));
        }
        voters.push(Voter {
            id,
            host: host.to_string(),
            port,
        });
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_list_parses() {
        let v = parse(" 1@127.0.0.1:9192, 2@[::1]:9193,3@broker-3.example:9194 ").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].host, "::1");
        assert_eq!(v[2].to_string(), "3@broker-3.example:9194");
    }

    #[test]
    fn every_mistake_is_named() {
        for (list, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("1-127.0.0.1:9192", "no '@'"),
            ("x@127.0.0.1:9192", "not a node id"),
            ("-1@127.0.0.1:9192", "not a node id"),
            ("1@127.0.0.1", "no port"),
            ("1@127.0.0.1:http", "not a port"),
            ("1@127.0.0.1:0", "not a port"),
            ("1@:9192", "not a host"),
            ("1@a:1,1@b:2", "given twice"),
            ("1@a:1,2@a:1", "same address"),
            ("1@a:1,", "no '@'"),
        ] {
            let err = parse(list).unwrap_err();
            assert!(err.contains(says), "{list:?}: {err}");
        }
    }
}
