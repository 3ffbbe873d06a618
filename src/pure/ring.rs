//! The hash ring: which shard owns a client id.
//!
//! Consistent hashing with virtual nodes and fixed hash keys, so placement is
//! the same in every process and on every start. Pure: no I/O, no executor.

/// Virtual nodes per shard: enough to spread clients within a few percent.
pub const VIRTUAL_NODES: usize = 128;

/// A consistent-hash ring over `shards` shards.
#[derive(Debug, Clone)]
pub struct Ring {
    // Sorted by point; each point belongs to one shard.
    points: Vec<(u64, u32)>,
    shards: usize,
    hasher: ahash::RandomState,
}

impl Ring {
    /// A ring for `shards` shards (at least one).
    pub fn new(shards: usize) -> Ring {
        let shards = shards.max(1);
        // Fixed keys: placement must not change between runs.
        let hasher = ahash::RandomState::with_seeds(
            0x6865_7264_5f72_696e,
            0x675f_7631_0000_0001,
            0x9e37_79b9_7f4a_7c15,
            0xc2b2_ae3d_27d4_eb4f,
        );
        let mut points: Vec<(u64, u32)> = (0..shards)
            .flat_map(|shard| (0..VIRTUAL_NODES).map(move |vnode| (shard as u32, vnode as u32)))
            .map(|(shard, vnode)| (hasher.hash_one((b"vnode", shard, vnode)), shard))
            .collect();
        points.sort_unstable();
        Ring {
            points,
            shards,
            hasher,
        }
    }

    /// The shard that owns `client_id`.
    pub fn owner(&self, client_id: impl AsRef<[u8]>) -> usize {
        if self.shards == 1 {
            return 0;
        }
        let h = self.hasher.hash_one(client_id.as_ref());
        let i = self.points.partition_point(|&(p, _)| p < h);
        // Past the last point, wrap to the first.
        let (_, shard) = self.points[if i == self.points.len() { 0 } else { i }];
        shard as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_owns_everything() {
        let ring = Ring::new(1);
        assert!((0..1000).all(|i| ring.owner(format!("c{i}")) == 0));
    }

    #[test]
    fn placement_is_stable_across_rings() {
        let a = Ring::new(4);
        let b = Ring::new(4);
        for i in 0..1000 {
            let id = format!("client-{i}");
            assert_eq!(a.owner(&id), b.owner(&id));
        }
    }

    #[test]
    fn clients_spread_over_every_shard_evenly() {
        let ring = Ring::new(4);
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[ring.owner(format!("client-{i}"))] += 1;
        }
        for c in counts {
            // 10_000 each if perfect; virtual nodes keep it within 20 %.
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_a_share_of_clients() {
        let four = Ring::new(4);
        let five = Ring::new(5);
        let moved = (0..10_000)
            .filter(|i| {
                let id = format!("client-{i}");
                four.owner(&id) != five.owner(&id)
            })
            .count();
        // Ideally 1/5 of clients move; a modulo hash would move 4/5.
        assert!(moved < 3_000, "{moved} moved");
        assert!(moved > 1_000, "{moved} moved");
    }
}
