//! Profiles: which value each check wants and why. `production` and `benchmark` are built in
//! (from `tuning/profiles/`); any other name is read as a file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub want: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub checks: BTreeMap<String, Expect>,
}

pub const CHECKS: &[&str] = &[
    "cpu_governor",
    "smt",
    "irq_affinity",
    "io_scheduler",
    "nomerges",
    "aio_max_nr",
    "memlock",
    "transparent_hugepages",
    "swappiness",
    "clocksource",
    "filesystem",
    "direct_io",
];

impl Profile {
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let checks: BTreeMap<String, Expect> =
            toml::from_str(text).map_err(|e| format!("profile {name}: {e}"))?;
        if let Some(k) = checks.keys().find(|k| !CHECKS.contains(&k.as_str())) {
            return Err(format!(
                "profile {name}: unknown check {k:?}; known: {}",
                CHECKS.join(", ")
            ));
        }
        Ok(Self {
            name: name.to_string(),
            checks,
        })
    }

    /// A built-in profile by name, or a profile file.
    pub fn load(name: &str) -> Result<Self, String> {
        match name {
            "production" => Self::parse(name, include_str!("../profiles/production.toml")),
            "benchmark" => Self::parse(name, include_str!("../profiles/benchmark.toml")),
            path => {
                let text = std::fs::read_to_string(Path::new(path)).map_err(|e| {
                    format!("profile {path:?}: not a built-in profile (production, benchmark) and not a readable file: {e}")
                })?;
                Self::parse(path, &text)
            }
        }
    }

    pub fn want(&self, check: &str) -> Option<&Expect> {
        self.checks.get(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_load_and_cover_every_check() {
        for name in ["production", "benchmark"] {
            let p = Profile::load(name).unwrap();
            for c in CHECKS {
                assert!(p.want(c).is_some(), "{name} lacks {c}");
            }
        }
        assert!(Profile::parse("x", "[nope]\nwant='1'\nwhy='y'").is_err());
        assert!(Profile::load("/no/such/profile.toml").is_err());
    }
}
