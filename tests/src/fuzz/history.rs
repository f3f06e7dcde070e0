//! The history of a run: what every worker did and believed, and what the nemesis did, as
//! one line of text per event with wall-clock timestamps in microseconds (all processes run on
//! one machine and share the clock).
//!
//! A line is a tag and `name=value` fields: `A w=1 id=17 key=k0 via=lock ttl=300 ...`.
//!
//! Fields added later (`min`, `max`, `keep`, `until` on holds and attempts, `by` on
//! extensions, `ttl` on sightings) are optional when read back, so histories written before them still load
//! (`FUZZ_RECHECK`): they read as no minimum or maximum hold, and extensions through the guard.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (the clock every process of a run shares).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The label written in the history.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// Reads a label back.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labels! {
    /// How a lock was asked for.
    Via {
        /// `client.lock(k)...await`.
        Lock = "lock",
        /// The same inside `tokio::time::timeout`, dropped when it fires.
        Timeout = "timeout",
        /// A `#[distributed_lock]` call naming its client.
        Macro = "macro",
        /// A guarded call on another key inside a guarded body.
        Nested = "nested",
        /// A guarded call on the same key inside a guarded body (re-entrant: no acquire).
        Reenter = "reenter",
        /// Two guarded calls on one key joined in one task (siblings exclude each other).
        Joined = "joined",
        /// A guarded call through the default client, made on another runtime.
        Default = "default",
    }
}

labels! {
    /// How an acquire attempt ended.
    Outcome {
        /// Acquired.
        Ok = "ok",
        /// `LockError::Busy`.
        Busy = "busy",
        /// `LockError::Lost` (a guarded body whose lease was lost counts as acquired).
        Lost = "lost",
        /// A backend failure.
        Backend = "backend",
        /// The acquire future was dropped by a timeout around it.
        Dropped = "dropped",
        /// Anything else.
        Other = "other",
    }
}

labels! {
    /// Why a worker stopped believing it held a lock.
    End {
        /// It sent the release (`release()`: a minimum hold is kept).
        Release = "release",
        /// It sent `release_now()` (the minimum hold is not kept).
        ReleaseNow = "releasenow",
        /// It dropped the guard (a minimum hold is kept).
        Drop = "drop",
        /// It dropped the guard after `keep_minimum_on_drop(false)`.
        DropNow = "dropnow",
        /// `lost()` resolved.
        Lost = "lost",
        /// `is_held()` answered false.
        NotHeld = "notheld",
        /// A guarded body finished.
        BodyDone = "done",
        /// A guarded call came back with `Lost` (the body was dropped).
        BodyLost = "bodylost",
        /// A guarded call came back with another error after its body ran.
        BodyError = "bodyerr",
    }
}

labels! {
    /// What an extension went through.
    Through {
        /// `guard.extend(d)`.
        Guard = "guard",
        /// `guard.held_lock().extend(d)`.
        Held = "held",
        /// `distlock::current().extend(d)` inside a guarded body.
        Current = "current",
    }
}

labels! {
    /// What a release (or extend) answered.
    Answer {
        /// Ok.
        Ok = "ok",
        /// `LockError::Lost`: the lock was not ours any more.
        Lost = "lost",
        /// Another error.
        Error = "err",
        /// Nothing was asked (a dropped guard, a guarded call).
        None = "-",
    }
}

/// An acquire attempt started (so that one that never ends is seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The worker.
    pub worker: u32,
    /// The attempt's id, unique within the worker.
    pub id: u64,
    /// The key.
    pub key: String,
    /// How it was asked for.
    pub via: Via,
    /// The requested wait bound (for `Timeout`: the timeout).
    pub wait_ms: u64,
    /// When it started.
    pub start: u64,
}

/// An acquire attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The worker.
    pub worker: u32,
    /// The attempt's id.
    pub id: u64,
    /// The key.
    pub key: String,
    /// How it was asked for.
    pub via: Via,
    /// The requested lease.
    pub ttl_ms: u64,
    /// The requested wait bound (for `Timeout`: the timeout).
    pub wait_ms: u64,
    /// Whether the watchdog renews it.
    pub watchdog: bool,
    /// The requested minimum hold (`min_hold`), 0 for none.
    pub min_hold_ms: u64,
    /// The requested maximum hold (`max_hold`), 0 for none.
    pub max_hold_ms: u64,
    /// When it was started.
    pub start: u64,
    /// When it returned (for a guarded call: when its body started, or when it came back
    /// without running the body).
    pub end: u64,
    /// What it returned.
    pub outcome: Outcome,
    /// The fencing token when acquired, else 0.
    pub fence: u64,
}

/// A believed-held interval: from the moment acquire returned to the moment the worker knew
/// it no longer held the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The worker.
    pub worker: u32,
    /// The attempt that acquired it.
    pub id: u64,
    /// The key.
    pub key: String,
    /// The fencing token.
    pub fence: u64,
    /// How it was asked for.
    pub via: Via,
    /// The longest lease asked for while held (the TTL and every extension sent).
    pub ttl_ms: u64,
    /// Whether the watchdog renewed it.
    pub watchdog: bool,
    /// The requested minimum hold, 0 for none.
    pub min_hold_ms: u64,
    /// The requested maximum hold, 0 for none.
    pub max_hold_ms: u64,
    /// Whether letting go kept the minimum hold (`release()`, or a drop without
    /// `keep_minimum_on_drop(false)`), also when a loss was seen first.
    pub keep: bool,
    /// When the acquire was started.
    pub sent: u64,
    /// When the acquire returned (the worker believes from here).
    pub acquired: u64,
    /// The last moment the worker saw it held (`is_held()` true, or a guarded body running).
    pub last_held: u64,
    /// The latest instant `remaining()` ever pointed at (the time it was asked plus what it
    /// answered), 0 when not asked.
    pub until: u64,
    /// When the worker stopped believing (release sent, guard dropped, loss seen).
    pub end: u64,
    /// Why.
    pub reason: End,
    /// What the release answered.
    pub release: Answer,
    /// When the release answered (or `end`).
    pub released: u64,
}

/// A write to the fenced store, made while the worker believed it held the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The worker.
    pub worker: u32,
    /// The attempt whose lock it wrote under.
    pub id: u64,
    /// The key.
    pub key: String,
    /// The fencing token sent along.
    pub fence: u64,
    /// When it was sent.
    pub start: u64,
    /// When it was answered.
    pub end: u64,
    /// Whether the store accepted it.
    pub accepted: bool,
    /// The store's sequence number for it (the order the store applied writes in).
    pub seq: u64,
}

/// A `guard.extend(..)` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    /// The worker.
    pub worker: u32,
    /// The attempt whose guard it extended.
    pub id: u64,
    /// The key.
    pub key: String,
    /// The fencing token.
    pub fence: u64,
    /// The new lease.
    pub ttl_ms: u64,
    /// What it went through.
    pub by: Through,
    /// When it was sent.
    pub start: u64,
    /// When it answered.
    pub end: u64,
    /// What it answered.
    pub answer: Answer,
}

/// A fault the nemesis injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Its number in the schedule.
    pub id: u64,
    /// What kind (`pause`, `restart`, `flushall`, ...).
    pub kind: String,
    /// What it hit (`node1`, `worker2`, `node0/conn3`, ...).
    pub target: String,
    /// When it started.
    pub start: u64,
    /// When it was healed (equal to `start` for instant faults).
    pub end: u64,
    /// Whether locks may have been forgotten by it (data loss, failover), on which nodes.
    pub data_loss: bool,
    /// The node it hit, if one (Redlock counts data loss per node).
    pub node: Option<usize>,
    /// The worker it hit, if one (a paused worker).
    pub worker: Option<u32>,
    /// The keys whose locks it may have lost (empty: all).
    pub keys: Vec<String>,
}

/// Who the deployment said held a key (`client.inspect`), polled by the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The key.
    pub key: String,
    /// The holder's fencing token.
    pub fence: u64,
    /// When it was asked.
    pub at: u64,
    /// The lease the deployment said was left (so it held the key until `at + ttl` at least).
    pub ttl_ms: Option<u64>,
}

/// A worker finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The worker.
    pub worker: u32,
    /// When.
    pub at: u64,
    /// Tasks still running when it gave up waiting for them.
    pub stuck: u64,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `B`: an acquire attempt started.
    Begin(Begin),
    /// `A`: an acquire attempt ended.
    Attempt(Attempt),
    /// `H`: a believed-held interval.
    Hold(Hold),
    /// `W`: a fenced write.
    Write(Write),
    /// `X`: an extension.
    Extend(Extend),
    /// `F`: a fault.
    Fault(Fault),
    /// `E`: a worker exited.
    Exit(Exit),
    /// `S`: the deployment named a holder.
    Seen(Seen),
}

impl Event {
    /// The key it concerns, if one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Begin(e) => Some(&e.key),
            Event::Attempt(e) => Some(&e.key),
            Event::Hold(e) => Some(&e.key),
            Event::Write(e) => Some(&e.key),
            Event::Extend(e) => Some(&e.key),
            Event::Seen(e) => Some(&e.key),
            Event::Fault(_) | Event::Exit(_) => None,
        }
    }

    /// When it happened (its start, for intervals).
    pub fn at(&self) -> u64 {
        match self {
            Event::Begin(e) => e.start,
            Event::Attempt(e) => e.start,
            Event::Hold(e) => e.acquired,
            Event::Write(e) => e.start,
            Event::Extend(e) => e.start,
            Event::Fault(e) => e.start,
            Event::Exit(e) => e.at,
            Event::Seen(e) => e.at,
        }
    }

    /// When it was over (its end, for intervals).
    pub fn until(&self) -> u64 {
        match self {
            Event::Begin(e) => e.start,
            Event::Attempt(e) => e.end,
            Event::Hold(e) => e.end.max(e.released),
            Event::Write(e) => e.end,
            Event::Extend(e) => e.end,
            Event::Fault(e) => e.end,
            Event::Exit(e) => e.at,
            Event::Seen(e) => e.at,
        }
    }

    /// The history line (without the newline).
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        let b = |v: bool| u8::from(v);
        let _ = match self {
            Event::Begin(e) => write!(
                s,
                "B w={} id={} key={} via={} wait={} s={}",
                e.worker, e.id, e.key, e.via, e.wait_ms, e.start
            ),
            Event::Attempt(e) => write!(
                s,
                "A w={} id={} key={} via={} ttl={} wait={} wd={} min={} max={} s={} e={} out={} f={}",
                e.worker,
                e.id,
                e.key,
                e.via,
                e.ttl_ms,
                e.wait_ms,
                b(e.watchdog),
                e.min_hold_ms,
                e.max_hold_ms,
                e.start,
                e.end,
                e.outcome,
                e.fence
            ),
            Event::Hold(e) => write!(
                s,
                "H w={} id={} key={} f={} via={} ttl={} wd={} min={} max={} keep={} sent={} acq={} last={} until={} end={} why={} rel={} relat={}",
                e.worker,
                e.id,
                e.key,
                e.fence,
                e.via,
                e.ttl_ms,
                b(e.watchdog),
                e.min_hold_ms,
                e.max_hold_ms,
                b(e.keep),
                e.sent,
                e.acquired,
                e.last_held,
                e.until,
                e.end,
                e.reason,
                e.release,
                e.released
            ),
            Event::Write(e) => write!(
                s,
                "W w={} id={} key={} f={} s={} e={} ok={} seq={}",
                e.worker,
                e.id,
                e.key,
                e.fence,
                e.start,
                e.end,
                b(e.accepted),
                e.seq
            ),
            Event::Extend(e) => write!(
                s,
                "X w={} id={} key={} f={} ttl={} by={} s={} e={} ans={}",
                e.worker, e.id, e.key, e.fence, e.ttl_ms, e.by, e.start, e.end, e.answer
            ),
            Event::Fault(e) => write!(
                s,
                "F id={} kind={} target={} s={} e={} loss={} node={} worker={} keys={}",
                e.id,
                e.kind,
                e.target,
                e.start,
                e.end,
                b(e.data_loss),
                e.node.map_or("-".to_owned(), |n| n.to_string()),
                e.worker.map_or("-".to_owned(), |n| n.to_string()),
                if e.keys.is_empty() {
                    "*".to_owned()
                } else {
                    e.keys.join(",")
                }
            ),
            Event::Exit(e) => write!(s, "E w={} at={} stuck={}", e.worker, e.at, e.stuck),
            Event::Seen(e) => write!(
                s,
                "S key={} f={} at={} ttl={}",
                e.key,
                e.fence,
                e.at,
                e.ttl_ms.map_or("-".to_owned(), |t| t.to_string())
            ),
        };
        s
    }

    /// Reads a history line; `None` for anything else (a stray line in a worker's output).
    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split_whitespace();
        let tag = parts.next()?;
        let fields: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        let text = |name: &str| fields.get(name).map(|v| (*v).to_owned());
        let num = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        let worker = || num("w").and_then(|w| u32::try_from(w).ok());
        let flag = |name: &str| num(name).map(|v| v == 1);
        // Fields added later: absent in older histories.
        let added = |name: &str| num(name).unwrap_or(0);
        Some(match tag {
            "B" => Event::Begin(Begin {
                worker: worker()?,
                id: num("id")?,
                key: text("key")?,
                via: Via::parse(fields.get("via")?)?,
                wait_ms: num("wait")?,
                start: num("s")?,
            }),
            "A" => Event::Attempt(Attempt {
                worker: worker()?,
                id: num("id")?,
                key: text("key")?,
                via: Via::parse(fields.get("via")?)?,
                ttl_ms: num("ttl")?,
                wait_ms: num("wait")?,
                watchdog: flag("wd")?,
                min_hold_ms: added("min"),
                max_hold_ms: added("max"),
                start: num("s")?,
                end: num("e")?,
                outcome: Outcome::parse(fields.get("out")?)?,
                fence: num("f")?,
            }),
            "H" => Event::Hold(Hold {
                worker: worker()?,
                id: num("id")?,
                key: text("key")?,
                fence: num("f")?,
                via: Via::parse(fields.get("via")?)?,
                ttl_ms: num("ttl")?,
                watchdog: flag("wd")?,
                min_hold_ms: added("min"),
                max_hold_ms: added("max"),
                keep: added("keep") == 1,
                sent: num("sent")?,
                acquired: num("acq")?,
                last_held: num("last")?,
                until: added("until"),
                end: num("end")?,
                reason: End::parse(fields.get("why")?)?,
                release: Answer::parse(fields.get("rel")?)?,
                released: num("relat")?,
            }),
            "W" => Event::Write(Write {
                worker: worker()?,
                id: num("id")?,
                key: text("key")?,
                fence: num("f")?,
                start: num("s")?,
                end: num("e")?,
                accepted: flag("ok")?,
                seq: num("seq")?,
            }),
            "X" => Event::Extend(Extend {
                worker: worker()?,
                id: num("id")?,
                key: text("key")?,
                fence: num("f")?,
                ttl_ms: num("ttl")?,
                by: fields
                    .get("by")
                    .map_or(Some(Through::Guard), |by| Through::parse(by))?,
                start: num("s")?,
                end: num("e")?,
                answer: Answer::parse(fields.get("ans")?)?,
            }),
            "F" => Event::Fault(Fault {
                id: num("id")?,
                kind: text("kind")?,
                target: text("target")?,
                start: num("s")?,
                end: num("e")?,
                data_loss: flag("loss")?,
                node: num("node").and_then(|n| usize::try_from(n).ok()),
                worker: num("worker").and_then(|n| u32::try_from(n).ok()),
                keys: match *fields.get("keys")? {
                    "*" => Vec::new(),
                    keys => keys.split(',').map(str::to_owned).collect(),
                },
            }),
            "E" => Event::Exit(Exit {
                worker: worker()?,
                at: num("at")?,
                stuck: num("stuck")?,
            }),
            "S" => Event::Seen(Seen {
                key: text("key")?,
                fence: num("f")?,
                at: num("at")?,
                ttl_ms: num("ttl"),
            }),
            _ => return None,
        })
    }
}

/// Where a worker writes its events: a file (one per worker process, flushed per line, so a
/// killed worker loses nothing it recorded) or memory (workers running in the test process).
#[derive(Debug, Clone)]
pub enum Sink {
    /// A history file.
    File(Arc<Mutex<std::fs::File>>),
    /// Events kept in memory.
    Memory(Arc<Mutex<Vec<Event>>>),
}

impl Sink {
    /// Records one event.
    pub fn record(&self, event: Event) {
        match self {
            Sink::File(file) => {
                let mut line = event.to_line();
                line.push('\n');
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                let _ = file.write_all(line.as_bytes());
            }
            Sink::Memory(events) => events.lock().unwrap_or_else(|p| p.into_inner()).push(event),
        }
    }
}

/// Reads a history file (lines that do not parse are skipped).
pub fn read_history(text: &str) -> Vec<Event> {
    text.lines().filter_map(Event::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_reads_back_as_written() {
        let events = vec![
            Event::Begin(Begin {
                worker: 1,
                id: 2,
                key: "k0".into(),
                via: Via::Timeout,
                wait_ms: 30,
                start: 5,
            }),
            Event::Attempt(Attempt {
                worker: 1,
                id: 2,
                key: "k0".into(),
                via: Via::Lock,
                ttl_ms: 300,
                wait_ms: 0,
                watchdog: true,
                min_hold_ms: 700,
                max_hold_ms: 0,
                start: 5,
                end: 9,
                outcome: Outcome::Busy,
                fence: 0,
            }),
            Event::Hold(Hold {
                worker: 0,
                id: 3,
                key: "k1".into(),
                fence: 77,
                via: Via::Joined,
                ttl_ms: 2000,
                watchdog: false,
                min_hold_ms: 300,
                max_hold_ms: 900,
                keep: true,
                sent: 1,
                acquired: 2,
                last_held: 3,
                until: 5,
                end: 4,
                reason: End::DropNow,
                release: Answer::Lost,
                released: 6,
            }),
            Event::Write(Write {
                worker: 2,
                id: 3,
                key: "k1".into(),
                fence: 77,
                start: 1,
                end: 2,
                accepted: false,
                seq: 9,
            }),
            Event::Extend(Extend {
                worker: 2,
                id: 3,
                key: "k1".into(),
                fence: 77,
                ttl_ms: 150,
                by: Through::Held,
                start: 1,
                end: 2,
                answer: Answer::Ok,
            }),
            Event::Fault(Fault {
                id: 4,
                kind: "restart".into(),
                target: "node1".into(),
                start: 10,
                end: 10,
                data_loss: true,
                node: Some(1),
                worker: None,
                keys: vec!["k0".into(), "k2".into()],
            }),
            Event::Exit(Exit {
                worker: 1,
                at: 99,
                stuck: 0,
            }),
            Event::Seen(Seen {
                key: "k2".into(),
                fence: 12,
                at: 34,
                ttl_ms: Some(250),
            }),
            Event::Seen(Seen {
                key: "k2".into(),
                fence: 13,
                at: 35,
                ttl_ms: None,
            }),
        ];
        for event in events {
            assert_eq!(Event::parse(&event.to_line()), Some(event.clone()));
        }
    }

    #[test]
    fn lines_written_before_the_hold_fields_still_read() {
        let hold = "H w=0 id=3 key=k1 f=77 via=lock ttl=2000 wd=1 sent=1 acq=2 last=3 end=4 \
                    why=release rel=ok relat=6";
        let Some(Event::Hold(h)) = Event::parse(hold) else {
            panic!("an old hold line did not read");
        };
        assert_eq!(
            (h.min_hold_ms, h.max_hold_ms, h.keep, h.until),
            (0, 0, false, 0)
        );
        let attempt = "A w=1 id=2 key=k0 via=lock ttl=300 wait=0 wd=1 s=5 e=9 out=ok f=8";
        let Some(Event::Attempt(a)) = Event::parse(attempt) else {
            panic!("an old attempt line did not read");
        };
        assert_eq!((a.min_hold_ms, a.max_hold_ms), (0, 0));
        let extend = "X w=2 id=3 key=k1 f=77 ttl=150 s=1 e=2 ans=ok";
        let Some(Event::Extend(x)) = Event::parse(extend) else {
            panic!("an old extend line did not read");
        };
        assert_eq!(x.by, Through::Guard);
    }
}
