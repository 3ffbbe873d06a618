//! Small numbers for server names, so that a record can carry where it
//! came from and who made it in a byte each (see `record.rs`, `Tags`).
//!
//! Owned by the process and shared by its shards: a name keeps its number
//! for as long as the server runs (a reload only adds names), so a tag
//! written before a reload means the same server after it. Numbers are
//! local to this server and never go on the wire. Pure: no I/O.

use crate::pure::record::MAX_TAG;
use std::collections::HashMap;

/// Server names and their numbers, 1 to [`MAX_TAG`]; 0 is no server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerIds {
    names: Vec<String>,
    by_name: HashMap<String, u8>,
}

impl ServerIds {
    /// Numbers for `names`, in order, from 1.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> ServerIds {
        ServerIds::default().with(names)
    }

    /// The same numbers, and new ones for the names not numbered yet. Past
    /// [`MAX_TAG`] names get none (0): their records are tagged as from no
    /// one, which only costs the savings the tags bring.
    pub(crate) fn with<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> ServerIds {
        for name in names {
            if self.by_name.contains_key(name) || self.names.len() >= usize::from(MAX_TAG) {
                continue;
            }
            self.names.push(name.to_owned());
            let id = u8::try_from(self.names.len()).unwrap_or(0);
            self.by_name.insert(name.to_owned(), id);
        }
        self
    }

    /// The number of `name`, 0 when it has none.
    pub(crate) fn id(&self, name: &str) -> u8 {
        self.by_name.get(name).copied().unwrap_or(0)
    }

    /// The name numbered `id`.
    pub(crate) fn name(&self, id: u8) -> Option<&str> {
        let i = usize::from(id).checked_sub(1)?;
        self.names.get(i).map(String::as_str)
    }

    /// How many names are numbered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_numbers_when_more_are_added() {
        let ids = ServerIds::new(["A", "B"]);
        assert_eq!((ids.id("A"), ids.id("B"), ids.id("C")), (1, 2, 0));
        let ids = ids.with(["C", "B", "A"]);
        assert_eq!((ids.id("A"), ids.id("B"), ids.id("C")), (1, 2, 3));
        assert_eq!(ids.name(3), Some("C"));
        assert_eq!((ids.name(0), ids.name(4)), (None, None));
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn names_past_the_last_tag_get_no_number() {
        let names: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let ids = ServerIds::new(names.iter().map(String::as_str));
        assert_eq!(ids.len(), usize::from(MAX_TAG));
        assert_eq!(ids.id("s126"), MAX_TAG);
        assert_eq!(ids.id("s127"), 0);
    }
}
