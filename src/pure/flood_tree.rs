//! The flood trees of a herd: for every server, the breadth-first tree
//! rooted at it over the configured neighbour graph, and the fingerprint
//! of that graph that two servers compare to know they agree on the trees.
//!
//! A record follows the tree of the server that made it (its origin): a
//! link sends it on only to a child in that tree, so it reaches every
//! server once, along a shortest path (PROTOCOL.md, "Flood trees"). Owns
//! only the shape; which records a link sends is the link's business, and
//! repair is `repair.rs`'s. Pure: computed from the config's names.

use crate::pure::digest::fingerprint;
use crate::pure::server_ids::ServerIds;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

/// A set of origins, as server ids (bit i: id i). Ids are below 128.
pub(crate) type Origins = u128;

/// The bit of origin `id` in an [`Origins`] set.
pub(crate) fn bit(id: u8) -> Origins {
    1u128.checked_shl(u32::from(id)).unwrap_or(0)
}

/// One server's view of the herd's trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Trees {
    /// The fingerprint of the graph: equal on two servers that read the same
    /// servers and neighbours.
    topology: u64,
    /// Origins that are servers of the graph: their records follow trees;
    /// others go everywhere.
    known: Origins,
    /// By neighbour id: the origins whose trees have that neighbour as this
    /// server's child.
    children: BTreeMap<u8, Origins>,
    /// By origin id: this server's parent in that origin's tree (its own
    /// tree has none).
    parents: BTreeMap<u8, u8>,
}

impl Trees {
    /// The trees of the graph of `servers` (name and neighbours), as server
    /// `me` sees them, numbered by `ids`. Neighbours named on one side only
    /// are left out: a link needs both.
    pub(crate) fn new<'a>(
        servers: impl IntoIterator<Item = (&'a str, &'a [String])>,
        me: &str,
        ids: &ServerIds,
    ) -> Trees {
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, neighbours) in servers {
            let mut list: Vec<&str> = neighbours.iter().map(String::as_str).collect();
            list.sort_unstable();
            list.dedup();
            graph.insert(name, list);
        }
        let mut text = String::new();
        for (name, neighbours) in &graph {
            let _ = write!(text, "{name}:{};", neighbours.join(","));
        }
        let topology = fingerprint(text.as_bytes());
        // Only links both ends list exist.
        let both: BTreeMap<&str, Vec<&str>> = graph
            .iter()
            .map(|(name, list)| {
                let kept = list
                    .iter()
                    .copied()
                    .filter(|n| graph.get(n).is_some_and(|back| back.contains(name)))
                    .collect();
                (*name, kept)
            })
            .collect();
        let mut trees = Trees {
            topology,
            ..Trees::default()
        };
        if !both.contains_key(me) {
            return trees;
        }
        for root in both.keys() {
            let origin = ids.id(root);
            if origin == 0 {
                continue;
            }
            trees.known |= bit(origin);
            let parent = parents_toward(&both, root);
            if let Some(p) = parent.get(me).and_then(|p| *p) {
                trees.parents.insert(origin, ids.id(p));
            }
            for (child, p) in &parent {
                if *p == Some(me) {
                    *trees.children.entry(ids.id(child)).or_default() |= bit(origin);
                }
            }
        }
        trees
    }

    /// The graph's fingerprint.
    pub(crate) fn topology(&self) -> u64 {
        self.topology
    }

    /// The origins whose records this server sends to `neighbour` (an id):
    /// those whose trees make it this server's child.
    pub(crate) fn children_of(&self, neighbour: u8) -> Origins {
        self.children.get(&neighbour).copied().unwrap_or(0)
    }

    /// The origins whose records follow trees: the herd's servers.
    pub(crate) fn known(&self) -> Origins {
        self.known
    }

    /// Whether records of `origin` follow a tree (else they go everywhere).
    pub(crate) fn knows(&self, origin: u8) -> bool {
        origin != 0 && self.known & bit(origin) != 0
    }

    /// This server's parent in `origin`'s tree: the neighbour that brings
    /// its records.
    pub(crate) fn parent(&self, origin: u8) -> Option<u8> {
        self.parents.get(&origin).copied()
    }
}

/// For every server reachable from `root`: its parent in the breadth-first
/// tree rooted there (`None` for the root), the parent being the first by
/// name among its neighbours nearest the root.
fn parents_toward<'a>(
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    root: &'a str,
) -> BTreeMap<&'a str, Option<&'a str>> {
    let mut distance: BTreeMap<&str, usize> = BTreeMap::new();
    distance.insert(root, 0);
    let mut queue = VecDeque::from([root]);
    while let Some(at) = queue.pop_front() {
        let d = distance[at];
        for &next in graph.get(at).map(Vec::as_slice).unwrap_or(&[]) {
            if !distance.contains_key(next) {
                distance.insert(next, d + 1);
                queue.push_back(next);
            }
        }
    }
    distance
        .iter()
        .map(|(&name, &d)| {
            let parent = graph
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .filter(|n| d > 0 && distance.get(n) == Some(&(d - 1)))
                .min();
            (name, parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn herd(pairs: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
        let mut names: Vec<&str> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .map(|&name| {
                let neighbours = pairs
                    .iter()
                    .filter_map(|&(a, b)| match (a == name, b == name) {
                        (true, _) => Some(b.to_owned()),
                        (_, true) => Some(a.to_owned()),
                        _ => None,
                    })
                    .collect();
                (name.to_owned(), neighbours)
            })
            .collect()
    }

    const DEFAULT: [(&str, &str); 6] = [
        ("Goloman", "Hands"),
        ("Goloman", "Holiday"),
        ("Goloman", "Wilkes"),
        ("Hands", "Wilkes"),
        ("Holiday", "Wilkes"),
        ("Holiday", "Welsh"),
    ];

    fn trees_of(pairs: &[(&str, &str)], me: &str) -> (Trees, ServerIds) {
        let servers = herd(pairs);
        let ids = ServerIds::new(servers.iter().map(|(n, _)| n.as_str()));
        let trees = Trees::new(
            servers.iter().map(|(n, l)| (n.as_str(), l.as_slice())),
            me,
            &ids,
        );
        (trees, ids)
    }

    /// The names of the origins in a set.
    fn names(set: Origins, ids: &ServerIds) -> Vec<String> {
        (1..=127u8)
            .filter(|&id| set & bit(id) != 0)
            .filter_map(|id| ids.name(id).map(str::to_owned))
            .collect()
    }

    #[test]
    fn in_the_default_herd_each_tree_is_a_shortest_path_tree() {
        let (holiday, ids) = trees_of(&DEFAULT, "Holiday");
        // Holiday sends its own records to all three neighbours.
        for n in ["Goloman", "Welsh", "Wilkes"] {
            assert!(names(holiday.children_of(ids.id(n)), &ids).contains(&"Holiday".to_owned()));
        }
        // Welsh hangs off Holiday in every tree but its own.
        assert_eq!(
            names(holiday.children_of(ids.id("Welsh")), &ids),
            ["Goloman", "Hands", "Holiday", "Wilkes"]
        );
        // Goloman's records reach Holiday from Goloman; Hands' from
        // Goloman too (Goloman and Wilkes are both one hop from Hands:
        // Goloman sorts first).
        assert_eq!(holiday.parent(ids.id("Goloman")), Some(ids.id("Goloman")));
        assert_eq!(holiday.parent(ids.id("Hands")), Some(ids.id("Goloman")));
        assert_eq!(holiday.parent(ids.id("Holiday")), None);
        assert_eq!(holiday.parent(ids.id("Welsh")), Some(ids.id("Welsh")));
    }

    #[test]
    fn every_tree_has_one_edge_less_than_servers_and_parents_and_children_agree() {
        let ring: Vec<(String, String)> = (0..10)
            .flat_map(|i| [1, 3].map(|d| (format!("S{i}"), format!("S{}", (i + d) % 10))))
            .collect();
        let pairs: Vec<(&str, &str)> = ring.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        for pairs in [&DEFAULT[..], &pairs[..]] {
            let servers = herd(pairs);
            let ids = ServerIds::new(servers.iter().map(|(n, _)| n.as_str()));
            let all: Vec<Trees> = servers
                .iter()
                .map(|(me, _)| trees_of(pairs, me).0)
                .collect();
            for (root, _) in &servers {
                let origin = ids.id(root);
                let mut edges = 0;
                for (i, (name, neighbours)) in servers.iter().enumerate() {
                    for n in neighbours {
                        let child = all[i].children_of(ids.id(n)) & bit(origin) != 0;
                        let j = servers.iter().position(|(m, _)| m == n).unwrap();
                        let parent_of_child = all[j].parent(origin) == Some(ids.id(name));
                        assert_eq!(child, parent_of_child, "{root}: {name} -> {n}");
                        edges += usize::from(child);
                    }
                }
                assert_eq!(edges, servers.len() - 1, "tree of {root}");
            }
            let topology = all[0].topology();
            assert!(all.iter().all(|t| t.topology() == topology));
        }
    }

    #[test]
    fn another_graph_has_another_fingerprint_and_one_sided_neighbours_are_no_link() {
        let (a, _) = trees_of(&DEFAULT, "Goloman");
        let (b, _) = trees_of(&DEFAULT[..5], "Goloman");
        assert_ne!(a.topology(), b.topology());
        // Welsh lists Holiday, Holiday does not list Welsh: no link.
        let mut servers = herd(&DEFAULT);
        for (name, neighbours) in &mut servers {
            if name == "Holiday" {
                neighbours.retain(|n| n != "Welsh");
            }
        }
        let ids = ServerIds::new(servers.iter().map(|(n, _)| n.as_str()));
        let welsh = Trees::new(
            servers.iter().map(|(n, l)| (n.as_str(), l.as_slice())),
            "Welsh",
            &ids,
        );
        assert_eq!(welsh.parent(ids.id("Goloman")), None);
        assert_eq!(welsh.children_of(ids.id("Holiday")), 0);
        assert!(welsh.knows(ids.id("Goloman")) && !welsh.knows(0));
    }
}
