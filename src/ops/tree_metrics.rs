//! What a server shows of its flood trees (PROTOCOL.md, "Flood trees"):
//! per outgoing link whether it is a tree link, which origins it carries,
//! its bytes, and the grafts and prunes its neighbour asked; per
//! neighbour the records it sent that this server already held. Rendered
//! into `/metrics` by `prometheus.rs` and `/status` by `metrics.rs`, from
//! plain rows.
//!
//! Pure: no I/O; the shards publish these figures with their others.

use serde_json::{json, Value};
use std::fmt::Write as _;

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

/// One row: the shard, the neighbour, and the link's figures.
pub(crate) type Row<'a> = (usize, &'a str, &'a LinkTree);

/// A per-neighbour counter family: name, help, and its figure of a link.
type Counter = (&'static str, &'static str, fn(&LinkTree) -> u64);

/// Appends the flood-tree families of `/metrics`: `rows` are every shard's
/// links, `neighbours` the server's neighbours in config order, and
/// `duplicates` what each sent that was already held.
pub(crate) fn render(
    out: &mut String,
    rows: &[Row<'_>],
    neighbours: &[String],
    duplicates: &dyn Fn(&str) -> u64,
) {
    let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        out,
        "herd_link_tree",
        "gauge",
        "1 when a shard's link sends along flood trees (both ends agree on the graph), 0 when it floods.",
    );
    for (shard, neighbour, t) in rows {
        let _ = writeln!(
            out,
            "herd_link_tree{{neighbour=\"{}\",shard=\"{shard}\"}} {}",
            label(neighbour),
            u8::from(t.tree)
        );
    }
    family(
        out,
        "herd_link_eager_origins",
        "gauge",
        "Servers whose records a shard's link sends (all of them on a link that floods).",
    );
    for (shard, neighbour, t) in rows {
        let _ = writeln!(
            out,
            "herd_link_eager_origins{{neighbour=\"{}\",shard=\"{shard}\"}} {}",
            label(neighbour),
            t.eager
        );
    }
    let per_neighbour: [Counter; 3] = [
        (
            "herd_link_bytes_sent_total",
            "Bytes written on the links to a neighbour, all shards, every line counted.",
            |t| t.bytes_sent,
        ),
        (
            "herd_link_grafts_total",
            "GRAFTs a neighbour sent on this server's links (records it found missing).",
            |t| t.grafts,
        ),
        (
            "herd_link_prunes_total",
            "PRUNEs a neighbour sent on this server's links (its tree reaches it again).",
            |t| t.prunes,
        ),
    ];
    for (name, help, pick) in per_neighbour {
        family(out, name, "counter", help);
        for neighbour in neighbours {
            let total: u64 = rows
                .iter()
                .filter(|(_, n, _)| n == neighbour)
                .map(|(_, _, t)| pick(t))
                .sum();
            let _ = writeln!(out, "{name}{{neighbour=\"{}\"}} {total}", label(neighbour));
        }
    }
    family(
        out,
        "herd_link_duplicates_total",
        "counter",
        "Records a neighbour sent that this server already held, or held newer.",
    );
    for neighbour in neighbours {
        let _ = writeln!(
            out,
            "herd_link_duplicates_total{{neighbour=\"{}\"}} {}",
            label(neighbour),
            duplicates(neighbour)
        );
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
mod tests {
    use super::*;

    fn tree(tree: bool, eager: u32) -> LinkTree {
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
    fn metrics_sum_a_neighbour_s_shards_and_name_every_neighbour() {
        let (a, b) = (tree(true, 2), tree(true, 3));
        let rows = [(0, "Hands", &a), (1, "Hands", &b)];
        let mut out = String::new();
        let neighbours = ["Hands".to_owned(), "Welsh".to_owned()];
        render(&mut out, &rows, &neighbours, &|n| {
            if n == "Hands" {
                7
            } else {
                0
            }
        });
        for line in [
            "herd_link_tree{neighbour=\"Hands\",shard=\"1\"} 1",
            "herd_link_eager_origins{neighbour=\"Hands\",shard=\"0\"} 2",
            "herd_link_bytes_sent_total{neighbour=\"Hands\"} 200",
            "herd_link_grafts_total{neighbour=\"Hands\"} 4",
            "herd_link_prunes_total{neighbour=\"Welsh\"} 0",
            "herd_link_duplicates_total{neighbour=\"Hands\"} 7",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
        let json = link_json(&[&a, &b], 7);
        assert_eq!(json["state"], "tree");
        assert_eq!(json["eager_origins"], 2);
        assert_eq!(json["bytes_sent"], 200);
        assert_eq!(link_json(&[&a, &tree(false, 0)], 0)["state"], "mixed");
    }
}
