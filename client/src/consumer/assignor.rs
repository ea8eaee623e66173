//! The range assignor (Kafka's `range`): what the group leader computes in a rebalance. The
//! members subscribed to the topic, in member id order, each take a contiguous range of its
//! partitions, the first ones one more when they do not divide evenly. A pure function.

use std::collections::BTreeMap;

pub(super) fn range_assign(
    members: &[(String, Vec<String>)],
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<String, Vec<i32>> {
    let subscribed: Vec<&String> = members
        .iter()
        .filter(|(_, t)| t.iter().any(|x| x == topic))
        .map(|(m, _)| m)
        .collect();
    let mut out: BTreeMap<String, Vec<i32>> = members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect();
    if subscribed.is_empty() {
        return out;
    }
    let mut sorted = subscribed.clone();
    sorted.sort();
    let per = partitions.len() / sorted.len();
    let extra = partitions.len() % sorted.len();
    let mut at = 0;
    for (i, m) in sorted.iter().enumerate() {
        let n = per + usize::from(i < extra);
        out.insert((*m).clone(), partitions[at..at + n].to_vec());
        at += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_splits_evenly() {
        let members = vec![
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string()]),
        ];
        let a = range_assign(&members, "t", &[0, 1, 2, 3, 4]);
        assert_eq!(a["a"], vec![0, 1, 2]);
        assert_eq!(a["b"], vec![3, 4]);
    }
}
