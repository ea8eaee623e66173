//! Which cluster a data directory belongs to. A cluster's id is derived from its voter list
//! (the same list gives the same id on every node, with no formatting step to forget) and
//! stamped into the data directory (`cluster-id`) at the first start; a data directory stamped
//! by another cluster, or holding a single-node broker's topics, is refused.

use std::path::Path;

use crate::voters::Voter;

pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// The id of the cluster of `voters` (in any order).
pub fn cluster_id(voters: &[Voter]) -> [u8; 16] {
    let mut names: Vec<String> = voters.iter().map(|v| v.to_string()).collect();
    names.sort();
    let text = names.join(",");
    // FNV-1a, twice with different offsets: stable across builds and platforms.
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_le_bytes());
    id[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_le_bytes());
    id
}

pub fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks (and at the first start, writes) the data directory's cluster id.
pub fn stamp(data_dir: &Path, id: &[u8; 16], single_node_topics: usize) -> Result<(), String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let want = format!("cluster-{}", hex(id));
    match std::fs::read_to_string(&path) {
        Ok(have) if have.trim() == want => Ok(()),
        Ok(have) => Err(format!(
            "the data directory {} belongs to {} and this node is configured for {want} (by its --voters list): use this cluster's data directory, or a new one",
            data_dir.display(),
            describe(have.trim()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if single_node_topics > 0 {
                return Err(format!(
                    "the data directory {} holds {single_node_topics} topic(s) of a single-node broker; a cluster node starts on a new data directory",
                    data_dir.display()
                ));
            }
            std::fs::write(&path, &want)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn describe(id: &str) -> String {
    if id.starts_with("cluster-") {
        format!("cluster {id}")
    } else {
        format!("a single-node broker (id {id})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voters::parse;

    #[test]
    fn the_id_depends_on_the_voters_not_their_order() {
        let a = cluster_id(&parse("1@h:1,2@h:2,3@h:3").unwrap());
        let b = cluster_id(&parse("3@h:3,1@h:1,2@h:2").unwrap());
        let c = cluster_id(&parse("1@h:1,2@h:2,3@h:4").unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_data_dir_of_another_cluster_or_a_single_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = cluster_id(&parse("1@h:1").unwrap());
        let b = cluster_id(&parse("1@h:2").unwrap());
        stamp(dir.path(), &a, 0).unwrap();
        stamp(dir.path(), &a, 0).unwrap();
        let err = stamp(dir.path(), &b, 0).unwrap_err();
        assert!(err.contains("belongs to cluster"), "{err}");
        let single = tempfile::tempdir().unwrap();
        std::fs::write(single.path().join(CLUSTER_ID_FILE), "spate-1234").unwrap();
        let err = stamp(single.path(), &a, 0).unwrap_err();
        assert!(err.contains("single-node"), "{err}");
        let fresh = tempfile::tempdir().unwrap();
        let err = stamp(fresh.path(), &a, 2).unwrap_err();
        assert!(err.contains("2 topic(s)"), "{err}");
    }
}
