//! A herd in a test: servers with real stores, trees, digests, links'
//! sending ends (`tree_out.rs`) and receiving ends (`repair.rs`), joined by
//! queues a property test drives in any order, with links cut and healed,
//! servers restarted empty and time passing unevenly. The property: once
//! every link is up again and the herd has settled, every server holds
//! the newest record of every client that any server holds. The shell's
//! loops (`net/link/outgoing.rs`, `net/link/tree_in.rs`) do what these steps do.

#[cfg(test)]
mod tests {
    use crate::pure::digest::{Board, Digest, Key};
    use crate::pure::flood_lines::{self, FloodLine};
    use crate::pure::flood_tree::Trees;
    use crate::pure::protocol::{parse_line, Command, Parsed, PosixTime};
    use crate::pure::record::{Record, Tags};
    use crate::pure::repair::{Heard, Request};
    use crate::pure::server_ids::ServerIds;
    use crate::pure::store::{CursorId, Receiver, Store};
    use crate::pure::tree_out::TreeOut;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const SETTLE: Duration = Duration::from_millis(200);

    /// What travels on a link: the sender's lines, and the receiver's
    /// requests the other way.
    #[derive(Debug, Clone)]
    enum Msg {
        /// A record line, sent in the sender's run.
        Record(String, u64),
        /// `SEQ <n>`.
        Seq(u64),
        /// One announcement: its entries, then its version.
        Announce(Vec<(Key, Digest)>, u64),
        /// `GRAFT` / `PRUNE`.
        Request(Request),
    }

    /// One link's sending end at its sender.
    struct Out {
        cursor: CursorId,
        tree: TreeOut,
        up: bool,
        /// The receiver's run, said when the link opened.
        receiver_run: u64,
        /// The requests of the receiver's `Heard` this link carried.
        written: Option<u64>,
    }

    impl Out {
        /// A closed link from `server` to `to`, with a cursor in its
        /// store.
        fn new(server: &mut Server, to: u8) -> Out {
            Out {
                cursor: server.store.open_cursor(),
                tree: TreeOut::new(to, server.trees.clone()),
                up: false,
                receiver_run: 0,
                written: None,
            }
        }
    }

    struct Server {
        id: u8,
        name: String,
        run: u64,
        store: Store,
        board: Board,
        trees: Arc<Trees>,
        /// By neighbour id: what it announced, what was asked.
        heard: HashMap<u8, Heard>,
        /// By neighbour id: the link to it.
        out: BTreeMap<u8, Out>,
        /// By neighbour id: its run and how far its stream was received.
        marks: HashMap<u8, (u64, u64)>,
    }

    struct Herd {
        servers: Vec<Server>,
        ids: ServerIds,
        /// By (sender, receiver): lines in flight, and requests back.
        wire: BTreeMap<(u8, u8), VecDeque<Msg>>,
        back: BTreeMap<(u8, u8), VecDeque<Msg>>,
        now: Instant,
        next_run: u64,
        clock: u64,
    }

    impl Herd {
        fn new(pairs: &[(usize, usize)], n: usize) -> Herd {
            let names: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
            let ids = ServerIds::new(names.iter().map(String::as_str));
            let neighbours: Vec<Vec<String>> = (0..n)
                .map(|i| {
                    pairs
                        .iter()
                        .filter_map(|&(a, b)| match (a == i, b == i) {
                            (true, _) => Some(names[b].clone()),
                            (_, true) => Some(names[a].clone()),
                            _ => None,
                        })
                        .collect()
                })
                .collect();
            let mut herd = Herd {
                servers: Vec::new(),
                ids,
                wire: BTreeMap::new(),
                back: BTreeMap::new(),
                now: Instant::now(),
                next_run: 1,
                clock: 1_000_000,
            };
            for (i, name) in names.iter().enumerate() {
                let trees = Arc::new(Trees::new(
                    names
                        .iter()
                        .zip(&neighbours)
                        .map(|(n, l)| (n.as_str(), l.as_slice())),
                    name,
                    &herd.ids,
                ));
                let id = herd.ids.id(name);
                let mut server = Server {
                    id,
                    name: name.clone(),
                    run: 0,
                    store: Store::new(),
                    board: Board::default(),
                    trees,
                    heard: HashMap::new(),
                    out: BTreeMap::new(),
                    marks: HashMap::new(),
                };
                herd.fresh(&mut server);
                for neighbour in &neighbours[i] {
                    let to = herd.ids.id(neighbour);
                    let out = Out::new(&mut server, to);
                    server.out.insert(to, out);
                }
                herd.servers.push(server);
            }
            let links: Vec<(u8, u8)> = herd.links();
            for (a, b) in links {
                herd.open(a, b);
            }
            herd
        }

        /// A server starting its run: empty, with a new run number.
        fn fresh(&mut self, server: &mut Server) {
            server.run = self.next_run;
            self.next_run += 1;
            server.store = Store::new();
            server.store.start_digests();
            server.board = Board::default();
            server.heard.clear();
            server.marks.clear();
            let neighbours: Vec<u8> = server.out.keys().copied().collect();
            for to in neighbours {
                let out = Out::new(server, to);
                server.out.insert(to, out);
            }
        }

        fn at(&self, id: u8) -> usize {
            usize::from(id) - 1
        }

        /// Every link, as (sender, receiver).
        fn links(&self) -> Vec<(u8, u8)> {
            self.servers
                .iter()
                .flat_map(|s| s.out.keys().map(move |&to| (s.id, to)))
                .collect()
        }

        /// Opens the link from `a` to `b`, as a dial and its answers do.
        fn open(&mut self, a: u8, b: u8) {
            let (ia, ib) = (self.at(a), self.at(b));
            let a_run = self.servers[ia].run;
            let receiver = &mut self.servers[ib];
            let since = match receiver.marks.get(&a) {
                Some(&(run, seq)) if run == a_run => seq,
                _ => 0,
            };
            let heard = receiver.heard.get(&a).map_or((0, 0), Heard::resume);
            let b_run = receiver.run;
            let sender = &mut self.servers[ia];
            let head = sender.store.seq();
            let announce_after = if heard.0 == a_run { heard.1 } else { 0 };
            let out = sender.out.get_mut(&b).expect("a neighbour");
            out.tree.opened(since, head, true, Some(announce_after));
            if since == 0 && heard.0 != 0 && heard.0 != a_run {
                // As the shell does, but harder: every record made up to a
                // second from now is left to the announcements.
                out.tree.lazy_before(self.clock / 1000 + 1);
            }
            out.up = true;
            out.receiver_run = b_run;
            out.written = None;
            sender.store.seek(out.cursor, since, usize::MAX);
            self.wire.insert((a, b), VecDeque::new());
            self.back.insert((a, b), VecDeque::new());
        }

        /// Cuts both directions between `a` and `b`: what was in flight is
        /// lost.
        fn cut(&mut self, a: u8, b: u8) {
            for (x, y) in [(a, b), (b, a)] {
                let ix = self.at(x);
                if let Some(out) = self.servers[ix].out.get_mut(&y) {
                    out.up = false;
                }
                self.wire.remove(&(x, y));
                self.back.remove(&(x, y));
            }
        }

        fn heal(&mut self, a: u8, b: u8) {
            for (x, y) in [(a, b), (b, a)] {
                let ix = self.at(x);
                if self.servers[ix].out.get(&y).is_some_and(|o| !o.up) {
                    self.open(x, y);
                }
            }
        }

        fn restart(&mut self, id: u8) {
            let links: Vec<(u8, u8)> = self.links();
            for (a, b) in links.iter().filter(|(a, b)| *a == id || *b == id) {
                self.cut(*a, *b);
            }
            let i = self.at(id);
            let mut server = std::mem::replace(
                &mut self.servers[i],
                Server {
                    id,
                    name: String::new(),
                    run: 0,
                    store: Store::new(),
                    board: Board::default(),
                    trees: Arc::new(Trees::default()),
                    heard: HashMap::new(),
                    out: BTreeMap::new(),
                    marks: HashMap::new(),
                },
            );
            self.fresh(&mut server);
            self.servers[i] = server;
            for (a, b) in links.iter().filter(|(a, b)| *a == id || *b == id) {
                self.heal(*a, *b);
            }
        }

        fn iamat(&mut self, server: u8, client: u8, time: u64) {
            self.clock += 1;
            let i = self.at(server);
            let line = format!("IAMAT c{client} +1-2 {time}");
            let Parsed::Command(Command::IAmAt(iamat)) = parse_line(line.as_bytes()) else {
                panic!("bad IAMAT")
            };
            let now = PosixTime {
                secs: self.clock / 1000,
                nanos: u32::try_from(self.clock % 1000).unwrap_or(0) * 1_000_000,
            };
            let s = &mut self.servers[i];
            let record = Record::from_iamat(&s.name, now, &iamat, s.id);
            s.store.apply_from(record, 0);
        }

        /// The link from `a` to `b` sends what is past its cursor, and an
        /// announcement.
        fn send(&mut self, a: u8, b: u8) {
            let i = self.at(a);
            let s = &mut self.servers[i];
            let Some(out) = s.out.get_mut(&b).filter(|o| o.up) else {
                return;
            };
            let mut bytes = Vec::new();
            let receiver = Some(Receiver {
                id: b,
                run: out.receiver_run,
            });
            let tree = &out.tree;
            while s
                .store
                .next_batch(out.cursor, 3, usize::MAX, &mut bytes, receiver, |r| {
                    tree.wants(r)
                })
                .is_some()
            {}
            let run = s.run;
            let seq = s.store.sent_seq(out.cursor);
            let mut msgs: Vec<Msg> = String::from_utf8(bytes)
                .expect("UTF-8")
                .lines()
                .map(|l| Msg::Record(l.to_owned(), run))
                .collect();
            msgs.push(Msg::Seq(seq));
            let mut said = Vec::new();
            out.tree.announce(&s.board, &self.ids, 3, &mut said);
            let mut entries = Vec::new();
            for line in String::from_utf8(said).expect("UTF-8").lines() {
                match flood_lines::parse(line) {
                    Some(FloodLine::Entry {
                        origin,
                        second,
                        digest,
                    }) => entries.push((
                        Key {
                            origin: self.ids.id(origin),
                            second,
                        },
                        digest,
                    )),
                    Some(FloodLine::Version(v)) => {
                        msgs.push(Msg::Announce(std::mem::take(&mut entries), v))
                    }
                    other => panic!("announced {other:?}"),
                }
            }
            if let Some(q) = self.wire.get_mut(&(a, b)) {
                q.extend(msgs);
            }
        }

        /// The receiver `b` takes the next line from `a`.
        fn deliver(&mut self, a: u8, b: u8) {
            let Some(msg) = self.wire.get_mut(&(a, b)).and_then(VecDeque::pop_front) else {
                return;
            };
            let now = self.now;
            let i = self.at(b);
            let s = &mut self.servers[i];
            match msg {
                Msg::Record(line, run) => {
                    let Parsed::Command(Command::At(at)) = parse_line(line.as_bytes()) else {
                        panic!("bad AT {line}")
                    };
                    let origin = self.ids.id(at.server);
                    let record = Record::from_at(&at, Tags { source: a, origin });
                    if s.trees.parent(origin) == Some(a) {
                        let second = crate::pure::digest::origin_second(&record);
                        s.board.parent_brought(origin, second);
                    }
                    s.store.apply_from(record, run);
                }
                Msg::Seq(seq) => {
                    let run = self.servers[self.at(a)].run;
                    self.servers[i].marks.insert(a, (run, seq));
                }
                Msg::Announce(entries, version) => {
                    let run = self.servers[self.at(a)].run;
                    let s = &mut self.servers[i];
                    let heard = s.heard.entry(a).or_default();
                    heard.run_is(run);
                    heard.announced(&entries, version, &s.board, now);
                }
                Msg::Request(_) => unreachable!("requests go back"),
            }
        }

        /// The sender `a` takes the next request from `b`.
        fn deliver_back(&mut self, a: u8, b: u8) {
            let Some(Msg::Request(request)) =
                self.back.get_mut(&(a, b)).and_then(VecDeque::pop_front)
            else {
                return;
            };
            let i = self.at(a);
            let s = &mut self.servers[i];
            let Some(out) = s.out.get_mut(&b).filter(|o| o.up) else {
                return;
            };
            match request {
                Request::Graft { origin, second } => {
                    out.tree.graft(origin);
                    let back = s.store.before_entry(Key { origin, second });
                    out.tree.rewinding(s.store.sent_seq(out.cursor));
                    if back < s.store.sent_seq(out.cursor) {
                        s.store.seek(out.cursor, back, usize::MAX);
                    }
                }
                Request::Prune { origin } => out.tree.prune(origin),
            }
        }

        /// A server's clock turn: digests folded into its board, and what
        /// each neighbour announced compared, with the requests sent.
        fn tick(&mut self, id: u8) {
            let now = self.now;
            let i = self.at(id);
            let s = &mut self.servers[i];
            s.store.fold_digests(usize::MAX);
            let changes = s.store.take_digest_changes();
            s.board.apply(&changes, now);
            let neighbours: Vec<u8> = s.out.keys().copied().collect();
            for n in neighbours {
                let run = self.servers[self.at(n)].run;
                let s = &mut self.servers[i];
                let heard = s.heard.entry(n).or_default();
                heard.run_is(run);
                heard.check(&s.board, &s.trees, n, SETTLE, now);
                // The link from n to here carries the requests.
                let ni = self.at(n);
                let up = self.servers[ni].out.get(&id).is_some_and(|o| o.up);
                if !up {
                    continue;
                }
                let written = self.servers[ni].out[&id].written;
                let (requests, next) = self.servers[i].heard[&n].requests_after(written);
                if let Some(out) = self.servers[ni].out.get_mut(&id) {
                    out.written = Some(next);
                }
                if let Some(q) = self.back.get_mut(&(n, id)) {
                    q.extend(requests.into_iter().map(Msg::Request));
                }
            }
        }

        /// Every link up but those in `dead` (cut for good), then rounds of
        /// everything until nothing moves.
        fn settle(&mut self, dead: &[(u8, u8)]) {
            let links = self.links();
            for &(a, b) in &links {
                self.heal(a, b);
            }
            for &(a, b) in dead {
                self.cut(a, b);
            }
            for _ in 0..60 {
                self.now += SETTLE / 2;
                let ids: Vec<u8> = self.servers.iter().map(|s| s.id).collect();
                for &id in &ids {
                    self.tick(id);
                }
                for &(a, b) in &links {
                    self.send(a, b);
                }
                while self.wire.values().any(|q| !q.is_empty())
                    || self.back.values().any(|q| !q.is_empty())
                {
                    for &(a, b) in &links {
                        self.deliver(a, b);
                        self.deliver_back(a, b);
                    }
                }
            }
        }

        /// Client -> the newest line any server holds.
        fn newest(&self) -> BTreeMap<String, Record> {
            let mut best: BTreeMap<String, Record> = BTreeMap::new();
            for s in &self.servers {
                for r in s.store.records() {
                    match best.get(r.client_id()) {
                        Some(b) if !r.is_newer_than(b) => {}
                        _ => {
                            best.insert(r.client_id().to_owned(), r.clone());
                        }
                    }
                }
            }
            best
        }
    }

    /// One step of the herd.
    #[derive(Debug, Clone)]
    enum Step {
        Iamat { server: u8, client: u8, back: bool },
        Send { link: usize },
        Deliver { link: usize, many: u8 },
        DeliverBack { link: usize },
        Tick { server: u8 },
        Wait { ms: u16 },
        Cut { link: usize },
        Heal { link: usize },
        Restart { server: u8 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..16, 0u8..12, proptest::bool::weighted(0.15))
                .prop_map(|(server, client, back)| Step::Iamat { server, client, back }),
            5 => (0usize..64).prop_map(|link| Step::Send { link }),
            8 => (0usize..64, 1u8..6).prop_map(|(link, many)| Step::Deliver { link, many }),
            3 => (0usize..64).prop_map(|link| Step::DeliverBack { link }),
            4 => (0u8..16).prop_map(|server| Step::Tick { server }),
            3 => (0u16..400).prop_map(|ms| Step::Wait { ms }),
            1 => (0usize..64).prop_map(|link| Step::Cut { link }),
            1 => (0usize..64).prop_map(|link| Step::Heal { link }),
            1 => (0u8..16).prop_map(|server| Step::Restart { server }),
        ]
    }

    /// The default herd's graph, a ring of ten with chords, and a line.
    fn graph(which: u8) -> (Vec<(usize, usize)>, usize) {
        match which {
            0 => (vec![(0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (2, 4)], 5),
            1 => (
                (0..10)
                    .flat_map(|i| [(i, (i + 1) % 10), (i, (i + 3) % 10)])
                    .collect(),
                10,
            ),
            _ => (vec![(0, 1), (1, 2), (2, 3)], 4),
        }
    }

    /// The links of `pairs` named by `picks` (by index) that can be cut
    /// together with every server still reachable from every other.
    fn dead_links(pairs: &[(usize, usize)], n: usize, picks: &[usize]) -> Vec<(u8, u8)> {
        let mut dead: Vec<usize> = Vec::new();
        for &p in picks {
            let candidate = p % pairs.len();
            if dead.contains(&candidate) {
                continue;
            }
            dead.push(candidate);
            let live: Vec<(usize, usize)> = pairs
                .iter()
                .enumerate()
                .filter(|(i, _)| !dead.contains(i))
                .map(|(_, &p)| p)
                .collect();
            let mut seen = vec![false; n];
            let mut stack = vec![0];
            while let Some(at) = stack.pop() {
                if std::mem::replace(&mut seen[at], true) {
                    continue;
                }
                for &(a, b) in &live {
                    if a == at && !seen[b] {
                        stack.push(b);
                    }
                    if b == at && !seen[a] {
                        stack.push(a);
                    }
                }
            }
            if seen.contains(&false) {
                dead.pop();
            }
        }
        let id = |i: usize| u8::try_from(i + 1).unwrap_or(u8::MAX);
        dead.iter()
            .map(|&i| (id(pairs[i].0), id(pairs[i].1)))
            .collect()
    }

    fn run(which: u8, steps: Vec<Step>, picks: &[usize]) -> Result<(), TestCaseError> {
        let (pairs, n) = graph(which);
        let dead = dead_links(&pairs, n, picks);
        let mut herd = Herd::new(&pairs, n);
        let n = u8::try_from(n).unwrap_or(u8::MAX);
        let links = herd.links();
        let mut time = 100u64;
        for step in steps {
            match step {
                Step::Iamat {
                    server,
                    client,
                    back,
                } => {
                    time += 1;
                    let t = if back { time / 2 } else { time };
                    herd.iamat(server % n + 1, client, t);
                }
                Step::Send { link } => {
                    let (a, b) = links[link % links.len()];
                    herd.send(a, b);
                }
                Step::Deliver { link, many } => {
                    let (a, b) = links[link % links.len()];
                    for _ in 0..many {
                        herd.deliver(a, b);
                    }
                }
                Step::DeliverBack { link } => {
                    let (a, b) = links[link % links.len()];
                    herd.deliver_back(a, b);
                }
                Step::Tick { server } => herd.tick(server % n + 1),
                Step::Wait { ms } => herd.now += Duration::from_millis(u64::from(ms)),
                Step::Cut { link } => {
                    let (a, b) = links[link % links.len()];
                    herd.cut(a, b);
                }
                Step::Heal { link } => {
                    let (a, b) = links[link % links.len()];
                    herd.heal(a, b);
                }
                Step::Restart { server } => herd.restart(server % n + 1),
            }
        }
        herd.settle(&dead);
        let newest = herd.newest();
        for s in &herd.servers {
            for (client, want) in &newest {
                let held = s.store.get(client);
                prop_assert_eq!(
                    held.map(Record::line),
                    Some(want.line()),
                    "{} on {}",
                    client,
                    s.name
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any order of records, announcements, GRAFT and PRUNE, links cut
        /// and healed, restarts and time: once every server can reach every
        /// other (some links cut for good, trees broken there) and the herd
        /// settled, every server holds every client's newest record.
        #[test]
        fn every_server_ends_with_every_newest_record(
            which in 0u8..3,
            steps in proptest::collection::vec(step(), 1..300),
            picks in proptest::collection::vec(0usize..64, 0..4),
        ) {
            run(which, steps, &picks)?;
        }
    }

    #[test]
    fn a_healthy_herd_sends_each_record_once_per_server() {
        let (pairs, n) = graph(1);
        let mut herd = Herd::new(&pairs, n);
        for client in 0..40 {
            herd.iamat(client % 10 + 1, client, 100 + u64::from(client));
        }
        let links = herd.links();
        let mut records = 0;
        for _ in 0..12 {
            for &(a, b) in &links {
                herd.send(a, b);
                records += herd.wire[&(a, b)]
                    .iter()
                    .filter(|m| matches!(m, Msg::Record(..)))
                    .count();
                while !herd.wire[&(a, b)].is_empty() {
                    herd.deliver(a, b);
                }
            }
        }
        assert_eq!(records, 40 * 9, "N - 1 copies of each record");
        assert!(herd.servers.iter().all(|s| s.store.len() == 40));
    }
}
