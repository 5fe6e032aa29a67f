//! Deterministic tests of the whole core: a client Session and a server Session wired to each
//! other in memory (no sockets, no clock but the one we pass in).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A fresh ed25519 host key made by ssh-keygen, for tests of both roles.
pub(crate) fn host_key() -> ssh_key::PrivateKey {
    let dir = tempfile_dir();
    let path = dir.join("host_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success());
    let key = ssh_key::PrivateKey::read_openssh_file(&path).expect("read key");
    let _ = std::fs::remove_dir_all(&dir);
    key
}

/// A directory of its own per call (tests run in parallel threads).
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warren-ssh-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

struct Pair {
    c: Session,
    s: Session,
    now: Instant,
    c_events: Vec<Event>,
    s_events: Vec<Event>,
    /// Every channel kind the server was asked to open, in order.
    s_opened: Vec<ChannelKind>,
    /// When set, the server is fed as the driver feeds it: appended to what `feed_buf`
    /// handed back, in chunks of these sizes in turn (any packet boundary falls anywhere).
    s_reads: Option<(bytes::BytesMut, Vec<usize>, usize)>,
}

impl Pair {
    fn new(tweak: impl Fn(&mut Config)) -> Pair {
        let now = Instant::now();
        let mut cc = Config::new(Role::Client);
        tweak(&mut cc);
        let mut sc = Config::new(Role::Server);
        sc.host_keys = vec![host_key()];
        tweak(&mut sc);
        Pair {
            c: Session::new(Arc::new(cc), now),
            s: Session::new(Arc::new(sc), now),
            now,
            c_events: Vec::new(),
            s_events: Vec::new(),
            s_opened: Vec::new(),
            s_reads: None,
        }
    }

    fn feed_server(&mut self, a: &[u8]) {
        let Some((buf, sizes, turn)) = self.s_reads.as_mut() else {
            let _ = self.s.feed(a, self.now);
            return;
        };
        let mut rest = a;
        while !rest.is_empty() {
            let n = sizes[*turn % sizes.len()].min(rest.len());
            *turn += 1;
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            let _ = self.s.feed_buf(buf, self.now);
        }
    }

    /// Moves bytes both ways until neither side has anything to send; collects events.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let a = self.c.take_transmit(Vec::new());
            let b = self.s.take_transmit(Vec::new());
            if a.is_empty() && b.is_empty() {
                break;
            }
            if !a.is_empty() {
                self.feed_server(&a);
            }
            if !b.is_empty() {
                let _ = self.c.feed(&b, self.now);
            }
            while let Some(e) = self.c.poll_event() {
                self.c_events.push(e);
            }
            while let Some(e) = self.s.poll_event() {
                self.s_events.push(e);
            }
            self.answer_server();
        }
    }

    /// A permissive server: accepts every password for "alice" and every channel.
    fn answer_server(&mut self) {
        let evs: Vec<Event> = std::mem::take(&mut self.s_events);
        for e in evs {
            match e {
                Event::AuthRequest {
                    id,
                    user,
                    method: AuthMethod::Password { password },
                } => {
                    let ok = user == "alice" && password == "pw";
                    self.s.auth_reply(
                        id,
                        if ok {
                            AuthReply::Accept
                        } else {
                            AuthReply::Reject {
                                methods: vec!["password".into()],
                                partial: false,
                            }
                        },
                    );
                }
                Event::AuthRequest { id, .. } => self.s.auth_reply(
                    id,
                    AuthReply::Reject {
                        methods: vec!["password".into()],
                        partial: false,
                    },
                ),
                Event::ChannelOpenRequest { id, kind } => {
                    self.s_opened.push(kind);
                    self.s.accept_channel(id);
                }
                other => self.s_events.push(other),
            }
        }
    }

    fn connect(&mut self) {
        self.pump();
        assert!(
            self.c_events.iter().any(|e| matches!(e, Event::HostKey(_))),
            "{:?}",
            self.c_events
        );
        self.c.auth_password("alice", "pw");
        self.pump();
        assert!(
            self.c_events
                .iter()
                .any(|e| matches!(e, Event::AuthSuccess)),
            "{:?}",
            self.c_events
        );
        assert!(self.c.is_authenticated() && self.s.is_authenticated());
    }

    /// Writes `data` on the client's channel, nobody reading at the server, until the
    /// sender may write no more; returns how much it wrote.
    fn write_until_blocked(&mut self, cid: ChannelId, data: &[u8]) -> usize {
        let mut sent = 0;
        while sent < data.len() {
            let n = self.c.channel_write(cid, &data[sent..]).unwrap();
            sent += n;
            self.pump();
            if n == 0 {
                break;
            }
        }
        sent
    }

    /// Writes `data` on the client's channel and returns what the server's side read, once
    /// all of it arrived or nothing moves any more.
    fn transfer(&mut self, cid: ChannelId, sid: ChannelId, data: &[u8]) -> Vec<u8> {
        let (mut sent, mut received) = (0, Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            if sent < data.len() {
                sent += self.c.channel_write(cid, &data[sent..]).unwrap();
            }
            self.pump();
            while let Read::Data(n) = self.s.channel_read(sid, &mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
            if received.len() == data.len() {
                break;
            }
        }
        received
    }

    fn open(&mut self) -> (ChannelId, ChannelId) {
        let before: Vec<ChannelId> = self.s.channels.keys().copied().collect();
        let cid = self
            .c
            .open_channel(ChannelKind::DirectTcpip {
                host: "db".into(),
                port: 5432,
                originator: "127.0.0.1".into(),
                originator_port: 1,
            })
            .unwrap();
        self.pump();
        assert!(
            self.c_events
                .iter()
                .any(|e| matches!(e, Event::ChannelOpened { id } if *id == cid))
        );
        let sid = *self
            .s
            .channels
            .keys()
            .find(|id| !before.contains(id))
            .expect("the server has the new channel");
        (cid, sid)
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn client_and_server_agree_on_keys_and_authenticate() {
    let mut p = Pair::new(|_| {});
    p.connect();
    assert_eq!(p.c.session_id(), p.s.session_id());
}

#[test]
fn every_kex_and_cipher_pair_works_between_our_roles() {
    for kex in crate::kex::KEX_ALGORITHMS {
        for cipher in crate::cipher::CIPHERS {
            let mut p = Pair::new(|c| {
                c.kex = vec![kex.to_string()];
                c.ciphers = vec![cipher.to_string()];
            });
            p.connect();
            let (cid, sid) = p.open();
            p.c.channel_write(cid, b"ping").unwrap();
            p.pump();
            let mut buf = [0u8; 8];
            assert_eq!(
                p.s.channel_read(sid, &mut buf),
                Read::Data(4),
                "{kex} {cipher}"
            );
        }
    }
}

#[test]
fn wrong_password_is_refused_and_the_session_lives_on() {
    let mut p = Pair::new(|_| {});
    p.pump();
    p.c.auth_password("alice", "nope");
    p.pump();
    assert!(
        p.c_events
            .iter()
            .any(|e| matches!(e, Event::AuthFailure { .. }))
    );
    assert!(!p.c.is_authenticated());
    p.c.auth_password("alice", "pw");
    p.pump();
    assert!(p.c.is_authenticated());
}

/// The heart of the engine: a reader that does not read stops its sender after one window,
/// and reading grants exactly what was consumed.
#[test]
fn an_unread_channel_stops_its_sender_after_one_window() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    let data = pattern(10 << 20);
    let mut sent = p.write_until_blocked(cid, &data);
    let window = p.s.config.window_initial as usize;
    assert_eq!(
        sent, window,
        "the sender must stop at exactly the initial window"
    );
    assert_eq!(p.s.channel_buffered(sid), window);
    // Reading 1 MiB lets exactly about that much more through.
    let mut got = vec![0u8; 1 << 20];
    let mut received = Vec::new();
    let Read::Data(n) = p.s.channel_read(sid, &mut got) else {
        panic!()
    };
    received.extend_from_slice(&got[..n]);
    p.pump();
    let more = p.c.channel_write(cid, &data[sent..]).unwrap();
    sent += more;
    assert!(more > 0 && more <= n, "granted {more} after consuming {n}");
    // Drain everything, in order.
    while received.len() < data.len() {
        if sent < data.len() {
            sent += p.c.channel_write(cid, &data[sent..]).unwrap();
        }
        p.pump();
        while let Read::Data(n) = p.s.channel_read(sid, &mut got) {
            received.extend_from_slice(&got[..n]);
        }
        assert!(p.s.channel_buffered(sid) <= p.s.channel_window_target(sid) as usize);
    }
    assert!(received == data, "every byte, in order, once");
}

#[test]
fn reading_in_chunks_splits_at_the_limit_and_grants_what_was_taken() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    let data = pattern(10 << 20);
    let mut sent = p.write_until_blocked(cid, &data);
    let window = p.s.config.window_initial as usize;
    assert_eq!(sent, window, "the sender stops at one window");
    // Limits that end inside a packet, at its end, and past everything buffered.
    let mut received = Vec::new();
    for max in [1, 32_767, 100_000, 5, 1 << 20] {
        let mut out = std::collections::VecDeque::new();
        assert_eq!(p.s.channel_read_chunks(sid, max, &mut out), Read::Data(max));
        assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), max);
        received.extend(out.iter().flat_map(|b| b.iter().copied()));
    }
    let taken = received.len();
    assert_eq!(p.s.channel_buffered(sid), window - taken);
    // What was taken is granted back: the sender may send about that much more.
    p.pump();
    let more = p.c.channel_write(cid, &data[sent..]).unwrap();
    assert!(
        more > 0 && more <= taken,
        "granted {more} after taking {taken}"
    );
    sent += more;
    while received.len() < sent {
        p.pump();
        let mut out = std::collections::VecDeque::new();
        let Read::Data(_) = p.s.channel_read_chunks(sid, usize::MAX, &mut out) else {
            break;
        };
        received.extend(out.iter().flat_map(|b| b.iter().copied()));
    }
    assert!(received[..] == data[..sent], "every byte, in order, once");
    p.c.channel_eof(cid);
    p.pump();
    let mut out = std::collections::VecDeque::new();
    assert_eq!(p.s.channel_read_chunks(sid, 64, &mut out), Read::Eof);
    assert!(out.is_empty());
}

#[test]
fn rekeying_in_the_middle_of_a_transfer_loses_nothing() {
    let mut p = Pair::new(|c| c.rekey_bytes = 256 * 1024);
    p.connect();
    let (cid, sid) = p.open();
    let data = pattern(3 << 20);
    assert!(p.transfer(cid, sid, &data) == data);
    assert!(!p.c.is_closed() && !p.s.is_closed());
}

/// The driver reads into the buffer the core slices packets from and gets the partial packet
/// back to append to; whatever the read sizes, every cipher (those that decrypt the length
/// ahead of the rest too) and a rekey in the middle lose and reorder nothing.
#[test]
fn feeding_in_the_readers_own_buffer_loses_nothing_at_any_read_size() {
    for cipher in crate::cipher::CIPHERS {
        let mut p = Pair::new(|c| {
            c.ciphers = vec![cipher.to_string()];
            c.rekey_bytes = 300 * 1024;
        });
        p.s_reads = Some((bytes::BytesMut::new(), vec![1, 7, 4093, 65537, 3, 32768], 0));
        p.connect();
        let (cid, sid) = p.open();
        let data = pattern(1 << 20);
        let received = p.transfer(cid, sid, &data);
        assert!(
            received == data,
            "{cipher}: {} of {}",
            received.len(),
            data.len()
        );
        assert!(!p.c.is_closed() && !p.s.is_closed(), "{cipher}");
    }
}

#[test]
fn eof_and_close_reach_the_other_side_and_free_the_channel() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    p.c.channel_write(cid, b"last words").unwrap();
    p.c.channel_eof(cid);
    p.pump();
    let mut buf = [0u8; 64];
    assert_eq!(p.s.channel_read(sid, &mut buf), Read::Data(10));
    assert_eq!(p.s.channel_read(sid, &mut buf), Read::Eof);
    p.s.channel_close(sid);
    p.pump();
    assert!(
        p.c_events
            .iter()
            .any(|e| matches!(e, Event::ChannelClosed { id } if *id == cid))
    );
    assert!(
        p.s_events
            .iter()
            .any(|e| matches!(e, Event::ChannelClosed { id } if *id == sid))
    );
    assert_eq!(p.c.channel_count(), 0);
    assert_eq!(p.s.channel_count(), 0);
}

#[test]
fn garbage_after_the_version_line_ends_the_session_with_an_error() {
    let now = Instant::now();
    let mut sc = Config::new(Role::Server);
    sc.host_keys = vec![host_key()];
    let mut s = Session::new(Arc::new(sc), now);
    let mut junk = b"SSH-2.0-evil\r\n".to_vec();
    junk.extend_from_slice(&[0xff; 64]);
    assert!(s.feed(&junk, now).is_err());
    assert!(s.is_closed());
    // More input after the end is ignored, never a panic.
    assert!(s.feed(&[0; 100], now).is_ok());
}

#[test]
fn keepalives_unanswered_end_the_session() {
    let mut p = Pair::new(|c| {
        c.keepalive_interval = Some(Duration::from_secs(5));
        c.keepalive_max = 2;
    });
    p.connect();
    // The server goes silent: we stop pumping.
    for i in 1..=4 {
        p.c.handle_timeout(p.now + Duration::from_secs(5 * i + 1));
    }
    assert!(p.c.is_closed());
}

/// A spare channel is handed out only while `channel_is_open`: the peer's EOF or CLOSE (data
/// still buffered or not) makes it unusable, and so does our own close.
#[test]
fn channel_is_open_until_the_peer_sends_eof_or_close() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    assert!(p.c.channel_is_open(cid));
    p.s.channel_write(sid, b"greeting").unwrap();
    p.pump();
    assert!(
        p.c.channel_is_open(cid),
        "data alone does not end a channel"
    );
    p.s.channel_eof(sid);
    p.pump();
    assert!(!p.c.channel_is_open(cid), "EOF received");

    let (cid2, sid2) = {
        let cid2 =
            p.c.open_channel(ChannelKind::Session)
                .expect("room for a channel");
        p.pump();
        let sid2 = *p.s.channels.keys().find(|&&k| k != sid).unwrap();
        (cid2, sid2)
    };
    assert!(p.c.channel_is_open(cid2));
    p.s.channel_close(sid2);
    p.pump();
    assert!(!p.c.channel_is_open(cid2), "CLOSE received");
    assert!(!p.c.channel_is_open(9999), "unknown id");
}

/// A refusing server says why on stderr: the client sees extended data, never channel data,
/// and a write is bounded by one packet and the peer's window.
#[test]
fn stderr_reaches_the_client_as_extended_data_within_the_window() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    assert_eq!(
        p.s.channel_write_stderr(sid, b"no shell here\r\n").unwrap(),
        15
    );
    p.pump();
    assert!(
        p.c_events.iter().any(
            |e| matches!(e, Event::ChannelStderr { id, data } if *id == cid && &data[..] == b"no shell here\r\n")
        ),
        "{:?}",
        p.c_events
    );
    let mut buf = [0u8; 64];
    assert_eq!(p.c.channel_read(cid, &mut buf), Read::WouldBlock);
    let big = pattern(1 << 20);
    let n = p.s.channel_write_stderr(sid, &big).unwrap();
    assert!(n > 0 && n <= p.c.config.max_packet as usize, "{n}");
    p.s.channel_eof(sid);
    assert!(p.s.channel_write_stderr(sid, b"late").is_err());
}

#[test]
fn the_window_budget_can_be_resized_after_the_session_started() {
    let mut p = Pair::new(|c| c.window_budget = 0);
    p.connect();
    assert_eq!(p.s.window_budget(), (0, 0));
    p.s.set_window_budget(64 << 20);
    assert_eq!(p.s.window_budget(), (0, 64 << 20));
}

/// asyncssh sends EXT_INFO as a client too (RFC 8308 §2.3); the server takes it in its stride.
#[test]
fn a_client_ext_info_is_accepted_by_the_server() {
    let mut p = Pair::new(|_| {});
    p.pump();
    let mut ext = vec![crate::msg::EXT_INFO];
    ext.extend_from_slice(&1u32.to_be_bytes());
    for s in [&b"delay-compression"[..], b"none,none"] {
        ext.extend_from_slice(&(s.len() as u32).to_be_bytes());
        ext.extend_from_slice(s);
    }
    p.c.send_raw_payload(&ext);
    p.pump();
    assert!(!p.s.is_closed(), "{:?}", p.s.error());
    p.c.auth_password("alice", "pw");
    p.pump();
    assert!(p.c.is_authenticated());
}

/// Window growth drawn from a pool shared with other sessions: taken as windows grow, all of
/// it back when the session ends, even with channels still open.
#[test]
fn window_growth_comes_from_the_shared_pool_and_goes_back() {
    let pool = Arc::new(CountingPool::with(6 << 20));
    let mut p = Pair::new(|_| {});
    p.connect();
    p.c.set_window_pool(pool.clone());
    let (cid, sid) = p.open();
    read_fast_while_the_window_limits(&mut p, cid, sid);
    let taken = (6u64 << 20) - pool.left();
    assert!(
        taken > 0 && taken <= 6 << 20,
        "growth must come from the pool (took {taken})"
    );
    assert!(p.c.channel_window_target(cid) > 2 << 20, "the window grew");
    drop(p);
    assert_eq!(
        pool.left(),
        6 << 20,
        "the session's end paid everything back"
    );
}

/// A channel of a session shared by many users (a cluster link) is charged to its own
/// user's pool as well as to the session's budget: it grows only as far as that pool
/// allows, another channel without one grows on, and the pool is paid back at the
/// channel's close and, for a channel still open, at the session's end.
#[test]
fn a_channel_with_its_own_pool_grows_only_as_far_as_that_pool_allows() {
    let user = Arc::new(CountingPool::with(1 << 20));
    let mut p = Pair::new(|_| {});
    p.connect();
    let (cid, sid) = p.open();
    p.c.set_channel_pool(cid, user.clone());
    read_fast_while_the_window_limits(&mut p, cid, sid);
    let target = p.c.channel_window_target(cid);
    assert!(
        target > 2 << 20 && target <= 3 << 20,
        "initial 2 MiB plus at most the pool's 1 MiB, got {target}"
    );
    assert_eq!(user.left(), 0, "the growth was the user's");
    let (in_use, _) = p.c.window_budget();
    assert_eq!(in_use, u64::from(target - (2 << 20)), "and the session's");

    let (free_c, free_s) = p.open();
    read_fast_while_the_window_limits(&mut p, free_c, free_s);
    let free = p.c.channel_window_target(free_c);
    assert!(
        free > 3 << 20,
        "a channel without a pool of its own grows past the pooled one's limit: {free}"
    );

    p.c.channel_close(cid);
    p.pump();
    p.pump();
    assert_eq!(user.left(), 1 << 20, "the close paid the user back");

    let again = Arc::new(CountingPool::with(1 << 20));
    let (cid, sid) = p.open();
    p.c.set_channel_pool(cid, again.clone());
    read_fast_while_the_window_limits(&mut p, cid, sid);
    assert!(
        again.left() < 1 << 20,
        "the second channel grew from its pool"
    );
    drop(p);
    assert_eq!(again.left(), 1 << 20, "the session's end paid it back");
}

/// A pool that counts what is left of it.
#[derive(Debug)]
struct CountingPool(std::sync::Mutex<u64>);

impl CountingPool {
    fn with(n: u64) -> Self {
        CountingPool(std::sync::Mutex::new(n))
    }

    fn left(&self) -> u64 {
        *self.0.lock().unwrap()
    }
}

impl crate::channel::WindowPool for CountingPool {
    fn take(&self, want: u64) -> u64 {
        let mut left = self.0.lock().unwrap();
        let got = want.min(*left);
        *left -= got;
        got
    }
    fn give(&self, n: u64) {
        *self.0.lock().unwrap() += n;
    }
}

/// A fast reader (the client) on a link where the window is the limit: the server runs
/// the window dry every 10 ms round and the client reads all of it, so the client's
/// autotuning grows the window as far as its budgets let it.
fn read_fast_while_the_window_limits(p: &mut Pair, cid: ChannelId, sid: ChannelId) {
    let data = pattern(64 << 20);
    let (mut sent, mut got) = (0, 0);
    let mut buf = vec![0u8; 1 << 20];
    for round in 0..400u64 {
        p.now += Duration::from_millis(10);
        p.c.set_time(p.now);
        sent += p.s.channel_write(sid, &data[sent..]).unwrap();
        p.pump();
        p.now += Duration::from_millis(10);
        p.c.set_time(p.now);
        while let Read::Data(n) = p.c.channel_read(cid, &mut buf) {
            got += n;
        }
        p.pump();
        if got == data.len() || round > 300 {
            break;
        }
    }
}

/// An unknown message number gets SSH_MSG_UNIMPLEMENTED with its sequence number (RFC 4253
/// §11.4) and the session goes on.
#[test]
fn an_unknown_message_is_answered_with_unimplemented() {
    let mut p = Pair::new(|_| {});
    p.connect();
    p.c.send_raw_payload(&[200, 1, 2, 3]);
    let a = p.c.take_transmit(Vec::new());
    p.s.feed(&a, p.now).unwrap();
    let reply = p.s.take_transmit(Vec::new());
    // Nothing else is pending on an idle session, so any packet here is the answer; the client
    // takes it (UNIMPLEMENTED is ignored) and both sides go on.
    assert!(!reply.is_empty(), "the server answered nothing");
    p.c.feed(&reply, p.now).unwrap();
    assert!(!p.c.is_closed() && !p.s.is_closed());
    let (cid, sid) = p.open();
    p.c.channel_write(cid, b"after").unwrap();
    p.pump();
    let mut buf = [0u8; 8];
    assert_eq!(p.s.channel_read(sid, &mut buf), Read::Data(5));
}

/// `max_channels` bounds what the peer makes us hold, never our own opens: a client with
/// thousands of -L connections must not be refused by its own engine, while a peer that
/// opens too many is refused, and a freed channel makes room again.
#[test]
fn max_channels_caps_the_peers_channels_not_ours() {
    let mut p = Pair::new(|c| c.max_channels = 3);
    p.connect();
    let direct = || ChannelKind::DirectTcpip {
        host: "db".into(),
        port: 5432,
        originator: "127.0.0.1".into(),
        originator_port: 1,
    };
    let ours: Vec<ChannelId> = (0..4)
        .map(|_| {
            p.c.open_channel(direct())
                .expect("our own opens are not capped")
        })
        .collect();
    p.pump();
    let opened = |p: &Pair, id: ChannelId| {
        p.c_events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpened { id: x } if *x == id))
    };
    assert!(
        ours[..3].iter().all(|&id| opened(&p, id)),
        "{:?}",
        p.c_events
    );
    assert!(
        p.c_events.iter().any(|e| matches!(
            e,
            Event::ChannelOpenFailed { id, reason, .. }
                if *id == ours[3] && *reason == crate::proto::reason::RESOURCE_SHORTAGE
        )),
        "the server refuses the peer's fourth: {:?}",
        p.c_events
    );
    // The server's own channel to the client is not counted against the client's three.
    let back =
        p.s.open_channel(ChannelKind::Session)
            .expect("server opens");
    p.pump();
    assert!(
        p.c_events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpenRequest { .. })),
        "the client was offered the server's channel: {:?}",
        p.c_events
    );
    let _ = back;
    // Closing the three (both sides, as any close ends) makes room for the peer again.
    for sid in 0..3 {
        p.s.channel_close(sid);
    }
    for &cid in &ours[..3] {
        p.c.channel_close(cid);
    }
    p.pump();
    let again = p.c.open_channel(direct()).unwrap();
    p.pump();
    assert!(
        opened(&p, again),
        "room again after a close: {:?}",
        p.c_events
    );
}

/// Windows grow to `foreign_window_cap` with peers other than warren's engine (OpenSSH
/// burns CPU buffering a larger window), to `window_cap` with our own roles.
#[test]
fn window_cap_depends_on_who_the_peer_says_it_is() {
    let now = Instant::now();
    let config = Arc::new(Config::new(Role::Client));
    for (line, cap, paced) in [
        (
            &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"[..],
            config.foreign_window_cap,
            true,
        ),
        (
            b"SSH-2.0-dropbear_2022.83\r\n",
            config.foreign_window_cap,
            true,
        ),
        (b"SSH-2.0-warrend_0.1.0\r\n", config.window_cap, false),
        (b"SSH-2.0-warren_0.1.0\r\n", config.window_cap, false),
    ] {
        let mut c = Session::new(config.clone(), now);
        c.feed(line, now).unwrap();
        let who = String::from_utf8_lossy(line);
        assert_eq!(c.window_cap(), cap, "{who}");
        assert_eq!(c.new_recv().is_paced(), paced, "{who}");
    }
    assert!(config.foreign_window_cap < config.window_cap);
}

#[test]
fn tun_datagrams_travel_one_per_message_and_are_never_split() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let cid =
        p.c.open_channel(ChannelKind::Tun {
            mode: super::TUN_MODE_POINTOPOINT,
            unit: super::TUN_UNIT_ANY,
        })
        .unwrap();
    p.pump();
    assert_eq!(
        p.s_opened,
        vec![ChannelKind::Tun {
            mode: 1,
            unit: 0x7fff_ffff
        }],
        "the open carries mode and unit"
    );
    let sid = *p.s.channels.keys().next().unwrap();
    // Packets of different sizes arrive as the same packets, not as a byte stream.
    let packets: Vec<Vec<u8>> = [1usize, 1500, 60, 9000]
        .iter()
        .map(|&n| pattern(n))
        .collect();
    for pkt in &packets {
        assert_eq!(
            p.c.channel_write_datagram(cid, pkt).unwrap(),
            Datagram::Sent
        );
    }
    p.pump();
    for pkt in &packets {
        assert_eq!(p.s.channel_read_chunk(sid).as_deref(), Some(&pkt[..]));
    }
    // Larger than the peer's maximum packet: refused whole, the channel lives on.
    let max = p.c.config.max_packet as usize;
    let big = pattern(max + 1);
    assert_eq!(
        p.c.channel_write_datagram(cid, &big).unwrap(),
        Datagram::TooLarge { max }
    );
    // Fill the window with datagrams the server does not read: the one that does not fit
    // is held back whole (Blocked), never sent in part.
    let pkt = pattern(30_000);
    let mut sent = 0usize;
    loop {
        match p.c.channel_write_datagram(cid, &pkt).unwrap() {
            Datagram::Sent => sent += pkt.len(),
            Datagram::Blocked => break,
            other => panic!("{other:?}"),
        }
        p.pump();
    }
    p.pump();
    let window = p.s.config.window_initial as usize;
    assert!(
        sent <= window && window - sent < pkt.len(),
        "sent {sent} of {window}"
    );
    assert_eq!(p.s.channel_buffered(sid), sent);
    // Reading makes room again (window adjusts may be batched); every datagram the server
    // reads is whole.
    let mut read = 0;
    let resumed = loop {
        match p.s.channel_read_chunk(sid) {
            Some(b) => {
                assert!(b[..] == pkt[..], "a whole datagram");
                read += 1;
            }
            None => break false,
        }
        p.pump();
        if p.c.channel_write_datagram(cid, &pkt).unwrap() == Datagram::Sent {
            break true;
        }
    };
    assert!(
        resumed,
        "reading {read} datagrams never reopened the window"
    );
}

/// The application's own channel types (`Config::extension_channels`) travel with their
/// payload in both directions; a type the receiver did not list is still refused by the core
/// as unknown, whether sent as `Extension` or `Other`.
#[test]
fn extension_channels_carry_their_payload_and_only_listed_types_arrive() {
    let mut p = Pair::new(|c| c.extension_channels = vec!["reach@warren".into()]);
    p.connect();
    let payload = b"\x00\x00\x00\x04name\xff".to_vec();
    let reach = |data: &[u8]| ChannelKind::Extension {
        kind: "reach@warren".into(),
        data: data.to_vec(),
    };
    // Client -> server (the test server accepts every channel it is offered).
    let cid = p.c.open_channel(reach(&payload)).unwrap();
    p.pump();
    assert_eq!(p.s_opened, vec![reach(&payload)]);
    assert!(
        p.c_events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpened { id } if *id == cid)),
        "{:?}",
        p.c_events
    );
    // Server -> client, with an empty payload.
    let sid = p.s.open_channel(reach(b"")).unwrap();
    p.pump();
    let offered = p.c_events.iter().find_map(|e| match e {
        Event::ChannelOpenRequest { id, kind } => Some((*id, kind.clone())),
        _ => None,
    });
    let (offered_id, kind) = offered.expect("the client was offered the channel");
    assert_eq!(kind, reach(b""));
    p.c.accept_channel(offered_id);
    p.pump();
    assert!(
        p.s_events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpened { id } if *id == sid)),
        "{:?}",
        p.s_events
    );
    // Unlisted types: refused as unknown, never shown to the application.
    let before = p.s_opened.len();
    let unlisted =
        p.c.open_channel(ChannelKind::Extension {
            kind: "other@warren".into(),
            data: payload.clone(),
        })
        .unwrap();
    let other = p.c.open_channel(ChannelKind::Other("x@y".into())).unwrap();
    p.pump();
    for id in [unlisted, other] {
        assert!(
            p.c_events.iter().any(|e| matches!(
                e,
                Event::ChannelOpenFailed { id: x, reason, .. }
                    if *x == id && *reason == crate::proto::reason::UNKNOWN_CHANNEL_TYPE
            )),
            "channel {id} refused as unknown: {:?}",
            p.c_events
        );
    }
    assert_eq!(p.s_opened.len(), before);
}

/// Without `extension_channels` (the default) the core refuses every extension type.
#[test]
fn extension_channels_are_refused_unless_listed() {
    let mut p = Pair::new(|_| {});
    p.connect();
    let id =
        p.c.open_channel(ChannelKind::Extension {
            kind: "reach@warren".into(),
            data: vec![1, 2, 3],
        })
        .unwrap();
    p.pump();
    assert!(p.s_opened.is_empty());
    assert!(
        p.c_events.iter().any(|e| matches!(
            e,
            Event::ChannelOpenFailed { id: x, reason, .. }
                if *x == id && *reason == crate::proto::reason::UNKNOWN_CHANNEL_TYPE
        )),
        "{:?}",
        p.c_events
    );
}
