//! What a server shows of its flood trees (PROTOCOL.md, "Flood trees"):
//! per outgoing link whether it is a tree link, which origins it carries,
//! its bytes, and the grafts and prunes its neighbour asked; per
//! neighbour the records it sent that this server already held. Rendered
//! into `/metrics` by `prometheus.rs` and `/status` by `metrics.rs`, from
//! plain rows.
//!
//! Pure: no I/O; the shards publish these figures with their others.

use serde_json::{json, Value};

/// One outgoing link's flood-tree figures, as a shard publishes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LinkTree {
    /// Whether the link sends along trees (both ends agree on the graph);
    /// else it floods every record.
    pub tree: bool,
    /// Of the herd's servers, how many whose records the link sends now
    /// (its children's origins and grafts; all of them when it floods).
    pub eager: u32,
    /// How many servers the herd has (origins with a tree).
    pub origins: u32,
    /// Bytes the link wrote since the server started.
    pub bytes_sent: u64,
    /// `GRAFT`s the neighbour sent on it since the server started.
    pub grafts: u64,
    /// `PRUNE`s, likewise.
    pub prunes: u64,
}

impl LinkTree {
    /// What the link is, in a word: `eager` (sends every origin's records),
    /// `lazy` (announcements only, no origin's records), or `tree`.
    pub(crate) fn word(&self) -> &'static str {
        if !self.tree || self.eager >= self.origins {
            "eager"
        } else if self.eager == 0 {
            "lazy"
        } else {
            "tree"
        }
    }
}

/// The flood-tree fields of one neighbour's entry in `/status`, from its
/// links on every shard.
pub(crate) fn link_json(links: &[&LinkTree], duplicates: u64) -> Value {
    let sum = |f: fn(&LinkTree) -> u64| links.iter().map(|t| f(t)).sum::<u64>();
    let word = match links.first() {
        Some(first) if links.iter().all(|t| t.word() == first.word()) => first.word(),
        Some(_) => "mixed",
        None => "-",
    };
    json!({
        "state": word,
        "tree": !links.is_empty() && links.iter().all(|t| t.tree),
        "eager_origins": links.iter().map(|t| t.eager).min().unwrap_or(0),
        "origins": links.iter().map(|t| t.origins).max().unwrap_or(0),
        "bytes_sent": sum(|t| t.bytes_sent),
        "grafts": sum(|t| t.grafts),
        "prunes": sum(|t| t.prunes),
        "duplicates": duplicates,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tree(tree: bool, eager: u32) -> LinkTree {
        LinkTree {
            tree,
            eager,
            origins: 5,
            bytes_sent: 100,
            grafts: 2,
            prunes: 1,
        }
    }

    #[test]
    fn a_link_is_eager_lazy_or_a_tree_link_by_the_origins_it_carries() {
        assert_eq!(tree(false, 0).word(), "eager");
        assert_eq!(tree(true, 5).word(), "eager");
        assert_eq!(tree(true, 0).word(), "lazy");
        assert_eq!(tree(true, 2).word(), "tree");
    }

    #[test]
    fn a_neighbour_s_status_sums_its_links_on_every_shard() {
        let (a, b) = (tree(true, 2), tree(true, 3));
        let json = link_json(&[&a, &b], 7);
        assert_eq!(json["state"], "tree");
        assert_eq!(json["eager_origins"], 2);
        assert_eq!(json["bytes_sent"], 200);
        assert_eq!(link_json(&[&a, &tree(false, 0)], 0)["state"], "mixed");
    }
}
