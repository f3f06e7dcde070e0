//! The runtime's tracing spans and events, seen by a subscriber: `distlock.acquire` with its
//! outcome, one `distlock.hold` per lock held (closed on release and on loss), busy at
//! DEBUG, lost at WARN inside the hold span, `distlock.renew` per watchdog batch.
//!
//! One global subscriber collects everything (the watchdog runs on the library's own thread,
//! so a thread-local one would miss it); each test looks only at its own keys.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::Env;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone)]
struct SpanSeen {
    name: &'static str,
    level: Level,
    fields: HashMap<String, String>,
    parent: Option<usize>,
    /// The spans it follows from.
    follows: Vec<usize>,
    closed: bool,
}

#[derive(Debug, Clone)]
struct EventSeen {
    level: Level,
    fields: HashMap<String, String>,
    /// The span it happened in (explicit or current).
    span: Option<usize>,
}

#[derive(Default)]
struct Seen {
    spans: Vec<SpanSeen>,
    /// Live span ids (ids are reused once closed) to their index in `spans`.
    live: HashMap<u64, usize>,
    events: Vec<EventSeen>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Seen>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Collector
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = if attrs.is_root() {
            None
        } else {
            attrs.parent().cloned().or_else(|| {
                attrs
                    .is_contextual()
                    .then(|| ctx.current_span().id().cloned())?
            })
        };
        let mut seen = self.0.lock().unwrap();
        let parent = parent.and_then(|p| seen.live.get(&p.into_u64()).copied());
        seen.spans.push(SpanSeen {
            name: attrs.metadata().name(),
            level: *attrs.metadata().level(),
            fields,
            parent,
            follows: Vec::new(),
            closed: false,
        });
        let index = seen.spans.len() - 1;
        seen.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(&i) = seen.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.spans[i].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let span = if event.is_root() {
            None
        } else {
            event
                .parent()
                .cloned()
                .or_else(|| ctx.current_span().id().cloned())
        };
        let mut seen = self.0.lock().unwrap();
        let span = span.and_then(|s| seen.live.get(&s.into_u64()).copied());
        seen.events.push(EventSeen {
            level: *event.metadata().level(),
            fields,
            span,
        });
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        let (Some(&i), Some(&f)) = (
            seen.live.get(&span.into_u64()),
            seen.live.get(&follows.into_u64()),
        ) else {
            return;
        };
        seen.spans[i].follows.push(f);
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(i) = seen.live.remove(&id.into_u64()) {
            seen.spans[i].closed = true;
        }
    }
}

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = Collector::default();
        tracing::subscriber::set_global_default(Registry::default().with(collector.clone()))
            .expect("the only global subscriber of this test binary");
        collector
    })
}

/// The spans named `name` whose `key` field is `key`.
fn spans(name: &str, key: &str) -> Vec<SpanSeen> {
    let seen = collector().0.lock().unwrap();
    seen.spans
        .iter()
        .filter(|s| s.name == name && s.fields.get("key").map(String::as_str) == Some(key))
        .cloned()
        .collect()
}

/// The events whose message is `message` and whose `key` field is `key`, with the span they
/// happened in.
fn events(message: &str, key: &str) -> Vec<(EventSeen, Option<SpanSeen>)> {
    let seen = collector().0.lock().unwrap();
    seen.events
        .iter()
        .filter(|e| {
            e.fields.get("message").map(String::as_str) == Some(message)
                && e.fields.get("key").map(String::as_str) == Some(key)
        })
        .map(|e| (e.clone(), e.span.map(|i| seen.spans[i].clone())))
        .collect()
}

/// `name`, made distinct per backend (both variants of a test may run in one process).
fn key(env: &Env, name: &str) -> String {
    let backend = if env.server().is_some() {
        "redis"
    } else {
        "memory"
    };
    format!("{name}:{backend}")
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn acquire_span_records_the_outcome(env: &Env) {
    collector();
    let acquire_key = key(env, "trace:acquire");
    let client = env.client().await;
    let guard = client.lock(&acquire_key).await.unwrap();
    let busy = client.lock(&acquire_key).await.unwrap_err();
    assert!(busy.is_busy());

    let acquires = spans("distlock.acquire", &acquire_key);
    assert_eq!(acquires.len(), 2, "{acquires:#?}");
    let (won, lost) = (&acquires[0], &acquires[1]);
    assert_eq!(won.level, Level::DEBUG);
    assert_eq!(won.fields["outcome"], "acquired");
    assert_eq!(won.fields["attempts"], "1");
    assert_eq!(won.fields["fence"], guard.fencing_token().to_string());
    assert_eq!(won.fields["ttl"], "30s");
    assert!(won.closed);
    assert_eq!(lost.fields["outcome"], "busy");
    assert!(lost.closed);

    let busy_events = events("lock busy", &acquire_key);
    assert_eq!(busy_events.len(), 1);
    let (event, span) = &busy_events[0];
    assert_eq!(event.level, Level::DEBUG, "busy is reported at DEBUG");
    assert_eq!(span.as_ref().unwrap().name, "distlock.acquire");
    guard.release().await.unwrap();
}

async fn a_waiting_request_counts_its_attempts(env: &Env) {
    collector();
    let wait_key = key(env, "trace:wait");
    let (holder, waiter) = (env.client().await, env.client().await);
    let guard = holder.lock(&wait_key).await.unwrap();
    let waiting = tokio::spawn({
        let wait_key = wait_key.clone();
        async move {
            waiter
                .lock(&wait_key)
                .wait(Duration::from_secs(10))
                .await
                .map(|g| g.fencing_token())
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    guard.release().await.unwrap();
    let fence = waiting.await.unwrap().unwrap();
    let acquires = spans("distlock.acquire", &wait_key);
    let waited = acquires
        .iter()
        .find(|s| s.fields.get("fence") == Some(&fence.to_string()))
        .expect("the waiter's acquire span");
    assert_eq!(waited.fields["outcome"], "acquired");
    let attempts: u64 = waited.fields["attempts"].parse().unwrap();
    assert!(attempts >= 2, "busy first, then acquired: {attempts}");
    assert_eq!(waited.fields["wait"], "10s");
}

async fn one_hold_span_per_lock_closed_on_release(env: &Env) {
    collector();
    let (a_key, b_key) = (key(env, "trace:hold:a"), key(env, "trace:hold:b"));
    let client = env.client().await;
    let caller = tracing::info_span!("caller");
    let (a, b) = {
        let _inside = caller.enter();
        (
            client.lock(&a_key).await.unwrap(),
            client.lock(&b_key).await.unwrap(),
        )
    };
    let holds = spans("distlock.hold", &a_key);
    assert_eq!(holds.len(), 1, "one hold span per lock held");
    let hold = &holds[0];
    assert_eq!(hold.level, Level::INFO);
    assert_eq!(hold.fields["fence"], a.fencing_token().to_string());
    assert!(!hold.closed, "open while held");
    {
        let seen = collector().0.lock().unwrap();
        let parent = &seen.spans[hold.parent.expect("a child of the caller's span")];
        assert_eq!(parent.name, "caller");
    }
    assert_eq!(spans("distlock.hold", &b_key).len(), 1);

    a.release().await.unwrap();
    assert!(
        spans("distlock.hold", &a_key)[0].closed,
        "closed on release"
    );
    let released = events("lock released", &a_key);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].0.level, Level::DEBUG);
    assert_eq!(released[0].1.as_ref().unwrap().name, "distlock.hold");
    assert!(!spans("distlock.hold", &b_key)[0].closed);

    drop(b); // released in the background
    eventually("the dropped guard's hold span closed", || {
        spans("distlock.hold", &b_key)[0].closed
    })
    .await;
    assert_eq!(spans("distlock.hold", &b_key).len(), 1);
}

async fn loss_is_a_warning_inside_the_hold_span_which_closes(env: &Env) {
    collector();
    let lost_key = key(env, "trace:lost");
    let client = env.client().await;
    let guard = client
        .lock(&lost_key)
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    env.flush(); // the lock is gone: the next renewal finds out
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost");
    eventually("the hold span closed", || {
        spans("distlock.hold", &lost_key)
            .first()
            .is_some_and(|s| s.closed)
    })
    .await;
    let lost = events("lock lost", &lost_key);
    assert_eq!(lost.len(), 1, "{lost:#?}");
    let (event, span) = &lost[0];
    assert_eq!(event.level, Level::WARN, "lost is reported at WARN");
    assert_eq!(event.fields["fence"], guard.fencing_token().to_string());
    let span = span.as_ref().expect("inside a span");
    assert_eq!(span.name, "distlock.hold");
    assert_eq!(span.fields["key"], lost_key);
    assert_eq!(spans("distlock.hold", &lost_key).len(), 1);
    assert!(events("lock released", &lost_key).is_empty());
    // Letting go of a lost lock reports nothing more.
    assert!(guard.release().await.is_err());
    assert_eq!(events("lock lost", &lost_key).len(), 1);
}

async fn renewals_have_a_span_per_batch(env: &Env) {
    collector();
    let renew_key = key(env, "trace:renew");
    let client = env.client().await;
    let guard = client
        .lock(&renew_key)
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    let hold_index = {
        let seen = collector().0.lock().unwrap();
        seen.spans
            .iter()
            .rposition(|s| {
                s.name == "distlock.hold"
                    && s.fields.get("key").map(String::as_str) == Some(renew_key.as_str())
            })
            .unwrap()
    };
    // A renewal batch is sent every ttl/3 = 100ms; its span follows from the hold span.
    let renewal = |seen: &Seen| {
        seen.spans
            .iter()
            .find(|s| s.name == "distlock.renew" && s.closed && s.follows.contains(&hold_index))
            .cloned()
    };
    eventually("a renewal batch", || {
        renewal(&collector().0.lock().unwrap()).is_some()
    })
    .await;
    let renew = renewal(&collector().0.lock().unwrap()).unwrap();
    assert_eq!(renew.level, Level::DEBUG);
    assert!(renew.parent.is_none(), "a root span");
    assert_eq!(renew.fields["outcome"], "renewed");
    assert!(renew.fields["locks"].parse::<usize>().unwrap() >= 1);
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

on_both_backends!(
    acquire_span_records_the_outcome,
    a_waiting_request_counts_its_attempts,
    one_hold_span_per_lock_closed_on_release,
    loss_is_a_warning_inside_the_hold_span_which_closes,
    renewals_have_a_span_per_batch,
);
