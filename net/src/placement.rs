//! Which shard owns a partition: a pure function of (topic, partition, shard count), so every
//! shard computes the same answer without asking. The result is recorded in the topic
//! metadata when the topic is created, so a change of core count does not move data silently.

/// The shard that owns `partition` of `topic` among `shards` shards.
pub fn shard_for(topic: &str, partition: u32, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    // A stable hash (crc32 of the name) spreads topics; consecutive partitions of a topic go
    // to consecutive shards.
    let h = u64::from(crc32fast::hash(topic.as_bytes()));
    ((h + u64::from(partition)) % shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(shard_for("orders", 3, 4), shard_for("orders", 3, 4));
        let counts = (0..64u32).fold([0usize; 4], |mut c, p| {
            c[shard_for("orders", p, 4)] += 1;
            c
        });
        assert_eq!(counts, [16, 16, 16, 16]);
        assert_eq!(shard_for("x", 0, 1), 0);
        assert_eq!(shard_for("x", 0, 0), 0);
    }
}
