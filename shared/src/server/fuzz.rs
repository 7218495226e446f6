//! [`fuzz_one`]: arbitrary bytes as a client's byte stream into a server
//! connection (a socket pair, the in-memory backend). The entry point for a
//! future libFuzzer target; a deterministic run of it is a unit test.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::mock::MockBackend;
use super::{Server, ServerConfig};

fn server() -> &'static Server<MockBackend> {
    static S: OnceLock<Server<MockBackend>> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = ServerConfig { notify_hold: Duration::from_millis(1), ..Default::default() };
        Server::new(Arc::new(MockBackend::with_card()), cfg)
    })
}

/// Feeds `bytes` to a fresh server connection, then closes the client's
/// sending side and drains the replies until the server closes. Panics only if
/// the server panicked (a bug).
pub fn fuzz_one(bytes: &[u8]) {
    let (client, srv) = UnixStream::pair().expect("socketpair");
    let server = server();
    let handle = std::thread::scope(|scope| {
        let conn = scope.spawn(move || server.serve(srv));
        let mut writer = client.try_clone().expect("dup");
        let input = bytes.to_vec();
        let w = scope.spawn(move || {
            // The server may close early (garbage): write errors are expected.
            let _ = writer.write_all(&input);
            let _ = writer.shutdown(Shutdown::Write);
        });
        let mut sink = [0u8; 8192];
        let mut r = &client;
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
        let _ = w.join();
        conn.join()
    });
    if let Err(p) = handle {
        std::panic::resume_unwind(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::header::{Command, Header};

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn msg(cmd: Command, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Header::new(cmd, body.len()).emit(&mut v);
        v.extend_from_slice(body);
        v
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    /// Plausible sessions of each version to mutate.
    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for minor in [0u32, 2, 3, 4, 5, 6, 7] {
            let mut s = msg(Command::VERSION, &words(&[4, minor, 0]));
            s.extend(msg(Command::ESTABLISH_CONTEXT, &words(&[0, 0, 0])));
            s.extend(msg(Command::GET_READERS_STATE, &[]));
            let mut connect = words(&[0]);
            let mut name = b"Mock Reader 00 00".to_vec();
            name.resize(if minor == 0 { 100 } else { 128 }, 0);
            connect.extend_from_slice(&name);
            connect.extend(words(&[2, 3, 0, 0, 0]));
            s.extend(msg(Command::CONNECT, &connect));
            s.extend(msg(Command::WAIT_READER_STATE_CHANGE, if minor <= 3 { &[0u8; 8][..] } else { &[] }));
            s.extend(msg(Command::STOP_WAITING_READER_STATE_CHANGE, if minor <= 3 { &[0u8; 8][..] } else { &[] }));
            s.extend(msg(Command::GET_READER_EVENTS, &[]));
            s.extend(msg(Command::GET_READERS_STATE_SIZE, &[]));
            s.extend(msg(Command::GET_READERS_STATE_ARRAY, &[]));
            let mut t = msg(Command::TRANSMIT, &words(&[0, 2, 16, 5, 2, 16, 258, 0]));
            t.extend_from_slice(&[0x00, 0xB0, 0x00, 0x00, 0x00]);
            s.extend(t);
            s.extend(msg(Command::CANCEL, &words(&[0, 0])));
            s.extend(msg(Command::RELEASE_CONTEXT, &words(&[0, 0])));
            out.push(s);
        }
        out
    }

    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(6) {
            match rng.below(7) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                2 => v.truncate(rng.below(v.len() + 1)),
                3 => {
                    // An interesting 32-bit value at an aligned offset.
                    let vals = [0u32, 1, 8, 12, 124, 152, 160, 264, 265, 65548, 65549, 0x7FFF_FFFF, 0xFFFF_FFFF];
                    if v.len() >= 4 {
                        let i = rng.below(v.len() / 4) * 4;
                        v[i..i + 4].copy_from_slice(&vals[rng.below(vals.len())].to_ne_bytes());
                    }
                }
                4 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a);
                    let at = rng.below(v.len() + 1);
                    v.splice(at..at, other[a..b].iter().copied());
                }
                5 => {
                    let cmd = Command(rng.below(0x1A) as u32);
                    let len = rng.below(300);
                    let mut m = Vec::new();
                    Header::new(cmd, len).emit(&mut m);
                    m.extend((0..len).map(|_| rng.next() as u8));
                    let at = rng.below(v.len() + 1);
                    v.splice(at..at, m);
                }
                _ => {
                    let n = rng.below(64);
                    v.extend((0..n).map(|_| rng.next() as u8));
                }
            }
        }
        v
    }

    #[test]
    fn fuzz_smoke_deterministic() {
        let seeds = seeds();
        for s in &seeds {
            fuzz_one(s);
        }
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let start = std::time::Instant::now();
        let mut n = 0;
        while n < 10_000 && start.elapsed() < Duration::from_secs(20) {
            let input = if n % 10 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                mutate(&mut rng, &seeds)
            };
            fuzz_one(&input);
            n += 1;
        }
        println!("fuzz_one: {n} inputs in {:?}", start.elapsed());
        assert!(n >= 500, "only {n} inputs in the time budget");
        // Nothing leaks: every connection released its context and cards.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server().connection_count() != 0 || server().backend().counts() != (0, 0) {
            assert!(std::time::Instant::now() < deadline, "leak: {:?}", server().backend().counts());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
