//! Placement: which disks get the parts of a segment.
//!
//! Never two parts of a segment on one disk; spread over as many nodes, then as many failure
//! domains (filesystems), as possible; among equals, weighted by free space. Also computes the
//! fault tolerance a segment really has, counting folders on one filesystem as one disk.

use std::collections::HashMap;

use rand::Rng;

use crate::ids::{DiskId, NodeId};

/// A disk that can take a part.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The disk.
    pub disk: DiskId,
    /// Its node.
    pub node: NodeId,
    /// Its failure domain (the filesystem device).
    pub domain: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// The filesystem's size in bytes (0: unknown).
    pub total_bytes: u64,
}

/// Not enough disks for the width asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{needed} disks needed, {available} can take new parts")]
pub struct NotEnoughDisks {
    /// Disks needed.
    pub needed: usize,
    /// Disks available.
    pub available: usize,
}

/// Chooses `n` distinct disks.
pub fn place(
    cands: &[Candidate],
    n: usize,
    rng: &mut impl Rng,
) -> Result<Vec<DiskId>, NotEnoughDisks> {
    place_beside(cands, n, &[], rng)
}

/// Chooses `n` distinct disks for parts joining parts already placed at `existing` (each a
/// `(node, domain)`): a repair spreads the new parts away from the survivors as an ingest
/// spreads a segment's parts away from each other.
pub fn place_beside(
    cands: &[Candidate],
    n: usize,
    existing: &[(NodeId, u64)],
    rng: &mut impl Rng,
) -> Result<Vec<DiskId>, NotEnoughDisks> {
    if cands.len() < n {
        return Err(NotEnoughDisks {
            needed: n,
            available: cands.len(),
        });
    }
    let mut left: Vec<&Candidate> = cands.iter().collect();
    let mut per_node: HashMap<NodeId, usize> = HashMap::new();
    let mut per_domain: HashMap<(NodeId, u64), usize> = HashMap::new();
    for &(node, domain) in existing {
        *per_node.entry(node).or_default() += 1;
        *per_domain.entry((node, domain)).or_default() += 1;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key =
            |c: &Candidate, pn: &HashMap<NodeId, usize>, pd: &HashMap<(NodeId, u64), usize>| {
                (
                    pn.get(&c.node).copied().unwrap_or(0),
                    pd.get(&(c.node, c.domain)).copied().unwrap_or(0),
                )
            };
        let best = left
            .iter()
            .map(|c| key(c, &per_node, &per_domain))
            .min()
            .unwrap_or((0, 0));
        let pool: Vec<usize> = (0..left.len())
            .filter(|&i| key(left[i], &per_node, &per_domain) == best)
            .collect();
        let total: u128 = pool
            .iter()
            .map(|&i| u128::from(left[i].free_bytes.max(1)))
            .sum();
        let mut pick = rng.random_range(0..total);
        let mut chosen = pool[0];
        for &i in &pool {
            let w = u128::from(left[i].free_bytes.max(1));
            if pick < w {
                chosen = i;
                break;
            }
            pick -= w;
        }
        let c = left.swap_remove(chosen);
        *per_node.entry(c.node).or_default() += 1;
        *per_domain.entry((c.node, c.domain)).or_default() += 1;
        out.push(c.disk);
    }
    Ok(out)
}

/// How many failures a segment survives, counted by real failure domains.
///
/// `parts_per_domain` gives, for each failure domain, how many healthy parts of the segment it
/// holds; the segment needs `k` of them. Returns the number of whole domains that can fail (the
/// worst case: the fullest domains fail first) while `k` parts remain.
pub fn domains_tolerated(parts_per_domain: &[usize], k: usize) -> usize {
    let mut counts = parts_per_domain.to_vec();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let mut remaining: usize = counts.iter().sum();
    if remaining < k {
        return 0;
    }
    let mut lost = 0;
    for c in counts {
        if remaining - c < k {
            break;
        }
        remaining -= c;
        lost += 1;
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cand(i: u8, node: u64, domain: u64, free: u64) -> Candidate {
        Candidate {
            total_bytes: 0,
            disk: DiskId(uuid::Uuid::from_bytes([i; 16])),
            node,
            domain,
            free_bytes: free,
        }
    }

    #[test]
    fn never_two_parts_on_one_disk_and_refuses_too_wide() {
        let c: Vec<_> = (0..6).map(|i| cand(i, 1, 1, 100)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let mut p = place(&c, 6, &mut rng).unwrap();
            p.sort();
            p.dedup();
            assert_eq!(p.len(), 6);
        }
        assert_eq!(
            place(&c, 7, &mut rng),
            Err(NotEnoughDisks {
                needed: 7,
                available: 6
            })
        );
    }

    #[test]
    fn weighted_by_free_space() {
        let c = vec![cand(1, 1, 1, 300), cand(2, 1, 2, 100)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let first = (0..4000)
            .filter(|_| place(&c, 1, &mut rng).unwrap()[0] == c[0].disk)
            .count();
        assert!((2700..3300).contains(&first), "{first}");
    }

    #[test]
    fn spreads_over_domains_first() {
        let c = vec![cand(1, 1, 1, 1000), cand(2, 1, 1, 1000), cand(3, 1, 2, 1)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert!(place(&c, 2, &mut rng).unwrap().contains(&c[2].disk));
        }
    }

    #[test]
    fn tolerance_by_domain() {
        assert_eq!(domains_tolerated(&[6], 4), 0); // six folders on one disk
        assert_eq!(domains_tolerated(&[1; 6], 4), 2);
        assert_eq!(domains_tolerated(&[3, 3], 4), 0);
        assert_eq!(domains_tolerated(&[2, 2, 2], 4), 1);
        assert_eq!(domains_tolerated(&[1, 1, 1], 1), 2);
    }

    #[test]
    fn parts_placed_beside_survivors_go_to_the_machines_that_hold_fewest() {
        // Node 1 already holds two parts, node 2 one: the next part goes to node 3, then 2.
        let cands = vec![cand(1, 1, 1, 100), cand(2, 2, 2, 100), cand(3, 3, 3, 100)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let got = place_beside(&cands, 2, &[(1, 1), (1, 9), (2, 2)], &mut rng).unwrap();
        assert_eq!(got[0], cands[2].disk);
        assert_eq!(got[1], cands[1].disk);
    }
}
