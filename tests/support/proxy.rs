//! A TCP proxy a test puts on a link: it can cut every connection it
//! carries and refuse new ones, go silent without closing (a half-open
//! link), or carry bytes slowly (a slow neighbour). Its threads end when it
//! is dropped; every wait is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP proxy that can cut every connection it carries and refuse new ones,
/// or silently stop forwarding on the connections it carries (a half-open
/// link: nothing closes, nothing gets through), or forward at a set pace.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    /// Connections opened before this generation swallow what they read.
    swallow_before: Arc<AtomicU64>,
    /// The generation of the newest connection carried.
    generation: Arc<AtomicU64>,
    /// Bytes per second each direction of each connection carries; 0: as
    /// fast as it can.
    pace: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", super::free_port())).expect("proxy port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking accepts");
        let proxy = Proxy {
            addr: listener.local_addr().expect("bound address"),
            cut: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            swallow_before: Arc::new(AtomicU64::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
            pace: Arc::new(AtomicU64::new(0)),
        };
        let (cut, open, stop) = (proxy.cut.clone(), proxy.open.clone(), proxy.stop.clone());
        let swallow_before = proxy.swallow_before.clone();
        let generation = proxy.generation.clone();
        let pace = proxy.pace.clone();
        std::thread::spawn(move || {
            // Bounded by `stop`, set when the proxy is dropped.
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let this = generation.fetch_add(1, Ordering::SeqCst) + 1;
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                let mut held = open.lock().unwrap_or_else(|p| p.into_inner());
                let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                held.push(c1);
                held.push(s1);
                drop(held);
                for (mut from, mut to) in [(c2, s2), (server, client)] {
                    let swallow_before = swallow_before.clone();
                    let pace = pace.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let per_sec = pace.load(Ordering::SeqCst);
                            // A slow link: small reads, each followed by
                            // the time its bytes take at the pace.
                            let want = match per_sec {
                                0 => buf.len(),
                                n => (n / 20).clamp(1, buf.len() as u64) as usize,
                            };
                            let n = match from.read(&mut buf[..want]) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if swallow_before.load(Ordering::SeqCst) > this {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            let wait = (n as u64 * 1_000_000_000).checked_div(per_sec);
                            if let Some(nanos) = wait {
                                std::thread::sleep(Duration::from_nanos(nanos));
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// Breaks every carried connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Takes connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Every connection carried now stops forwarding, without closing:
    /// bytes sent into it vanish. New connections forward as usual.
    pub fn go_half_open(&self) {
        let newest = self.generation.load(Ordering::SeqCst);
        self.swallow_before.store(newest + 1, Ordering::SeqCst);
    }

    /// Every connection carries at most `bytes_per_sec` each way from now
    /// on (0: as fast as it can).
    pub fn slow_to(&self, bytes_per_sec: u64) {
        self.pace.store(bytes_per_sec, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}
