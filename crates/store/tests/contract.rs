//! One contract, two stores: the in-process one and Redis (a real redis-server started here).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::time::{Duration, Instant};

use mesh_store::{
    AlertStore, ApprovalStore, GraphStore, HistoryStore, LogEntry, MemoryStore, PlanStore,
    Publication, RecordStore, RedisStore, Retention, STREAM_START, Shelf, StoreError, Taken,
    Transition, Updated,
};
use mesh_testkit::Redis;

fn publication(epoch: u64, from: u64, to: u64, delta: bool) -> Publication {
    Publication {
        epoch,
        from_version: from,
        to_version: to,
        snapshot: format!("graph@{to}").into_bytes(),
        delta: delta.then(|| format!("delta {from}->{to}").into_bytes()),
        lease: None,
    }
}

/// One holder at a time; each acquisition a new epoch; renewals and writes only by the lease
/// held now; a lapsed lease can be taken by another, and its former holder is fenced.
async fn the_lease_elects_one_writer_and_fences_the_last<S: GraphStore>(s: &S) {
    let ttl = Duration::from_millis(300);
    let a = s.acquire("a", ttl, 0).await.unwrap().expect("a free lease");
    assert!(s.acquire("b", ttl, 0).await.unwrap().is_none(), "held by a");
    assert!(s.renew(&a, ttl).await.unwrap());
    let write = |lease: &mesh_store::Lease, from, to| Publication {
        lease: Some(lease.token()),
        ..publication(lease.epoch, from, to, from > 0)
    };
    s.publish(write(&a, 0, 1)).await.unwrap();
    // a stops renewing (paused); the lease lapses and b takes it under a newer epoch.
    let b = poll_acquire(s, "b", ttl).await;
    assert!(b.epoch > a.epoch, "{a:?} {b:?}");
    assert!(!s.renew(&a, ttl).await.unwrap(), "a's lease is gone");
    assert!(matches!(
        s.publish(write(&a, 1, 2)).await,
        Err(StoreError::Fenced { .. })
    ));
    s.publish(write(&b, 1, 2)).await.unwrap();
    // Released, it is free at once, and the next epoch is past the snapshot's.
    s.release(&b).await.unwrap();
    let c = s.acquire("c", ttl, 0).await.unwrap().expect("released");
    assert!(c.epoch > b.epoch);
    // b's late write, after giving the lease up, is refused as well.
    assert!(matches!(
        s.publish(write(&b, 2, 3)).await,
        Err(StoreError::Fenced { .. })
    ));
    let snap = s.load().await.unwrap().unwrap();
    assert_eq!((snap.version, snap.epoch), (2, b.epoch));
    // A holder that knows of a newer epoch (the store lost its counter) goes past it.
    s.release(&c).await.unwrap();
    let d = s.acquire("d", ttl, c.epoch + 10).await.unwrap().unwrap();
    assert_eq!(d.epoch, c.epoch + 11);
}

/// Plans: bound to their owner, taken once, gone after their TTL.
async fn plans_are_single_use_expiring_and_bound_to_their_owner<S: PlanStore>(s: &S) {
    let minute = Duration::from_secs(60);
    s.put_plan("p1", "alice", b"plan one".to_vec(), minute)
        .await
        .unwrap();
    assert_eq!(s.take_plan("p1", "bob").await.unwrap(), Taken::NotYours);
    assert_eq!(
        s.take_plan("p1", "alice").await.unwrap(),
        Taken::Plan(b"plan one".to_vec())
    );
    assert_eq!(s.take_plan("p1", "alice").await.unwrap(), Taken::Missing);
    assert_eq!(s.take_plan("never", "alice").await.unwrap(), Taken::Missing);
    s.put_plan(
        "p2",
        "alice",
        b"plan two".to_vec(),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.take_plan("p2", "alice").await.unwrap(), Taken::Missing);
}

/// Approvals: one transition wins, the state and who moved it are kept, they expire.
async fn approvals_move_once_and_expire<S: ApprovalStore>(s: &S) {
    let minute = Duration::from_secs(60);
    s.put_approval("a1", b"record".to_vec(), minute)
        .await
        .unwrap();
    let e = s.get_approval("a1").await.unwrap().unwrap();
    assert_eq!((e.state.as_str(), e.by.as_str()), ("pending", ""));
    let (one, two) = tokio::join!(
        s.transition("a1", "pending", "applying", "bob"),
        s.transition("a1", "pending", "applying", "carol"),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    let moved = [&one, &two]
        .iter()
        .filter(|t| ***t == Transition::Moved(b"record".to_vec()))
        .count();
    assert_eq!(moved, 1, "exactly one click wins: {one:?} {two:?}");
    let e = s.get_approval("a1").await.unwrap().unwrap();
    assert_eq!(e.state, "applying");
    assert_eq!(
        s.transition("a1", "pending", "rejected", "dave")
            .await
            .unwrap(),
        Transition::Now {
            state: "applying".into(),
            by: e.by.clone()
        }
    );
    assert!(matches!(
        s.transition("a1", "applying", "applied", "bob")
            .await
            .unwrap(),
        Transition::Moved(_)
    ));
    assert_eq!(
        s.transition("never", "pending", "applying", "bob")
            .await
            .unwrap(),
        Transition::Missing
    );
    // A step held too briefly is not taken over; one held long enough is.
    s.put_approval("a3", b"r3".to_vec(), minute).await.unwrap();
    s.transition("a3", "pending", "applying", "bob")
        .await
        .unwrap();
    let young = s
        .transition_after(
            "a3",
            "applying",
            "applying",
            "carol",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(
        young,
        Transition::Now {
            state: "applying".into(),
            by: "bob".into()
        }
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let old = s
        .transition_after(
            "a3",
            "applying",
            "applying",
            "carol",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(old, Transition::Moved(b"r3".to_vec()));
    assert_eq!(s.get_approval("a3").await.unwrap().unwrap().by, "carol");
    s.put_approval("a2", b"r".to_vec(), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(s.get_approval("a2").await.unwrap().is_none());
    assert_eq!(
        s.transition("a2", "pending", "applying", "bob")
            .await
            .unwrap(),
        Transition::Missing
    );
}

/// Alert state: subscriptions set and removed; a mark changes the set once.
async fn alert_state_is_shared_and_marks_once<S: AlertStore>(s: &S) {
    s.set_subscription("slack:C1", Some(b"{}".to_vec()))
        .await
        .unwrap();
    s.set_subscription("discord:9", Some(b"{\"kinds\":[]}".to_vec()))
        .await
        .unwrap();
    s.set_subscription("slack:C1", None).await.unwrap();
    assert_eq!(
        s.subscriptions().await.unwrap(),
        vec![("discord:9".to_owned(), b"{\"kinds\":[]}".to_vec())]
    );
    assert!(s.mark("active", "plaintext a->b", true).await.unwrap());
    assert!(
        !s.mark("active", "plaintext a->b", true).await.unwrap(),
        "already there"
    );
    assert_eq!(
        s.members("active").await.unwrap(),
        vec!["plaintext a->b".to_owned()]
    );
    assert!(s.mark("active", "plaintext a->b", false).await.unwrap());
    assert!(
        !s.mark("active", "plaintext a->b", false).await.unwrap(),
        "already gone"
    );
    assert!(s.members("active").await.unwrap().is_empty());
}

/// Records: created once, updated only at the revision read (of two racing updates one
/// wins, the other is told what won), listed oldest first per shelf, never expiring, removed
/// on request; the shelves do not see each other's records.
async fn records_update_at_their_revision_only<S: RecordStore>(s: &S) {
    let r = Shelf::Rollouts;
    assert!(
        s.create_record(r, "r1", "proposed", b"one".to_vec())
            .await
            .unwrap()
    );
    assert!(
        !s.create_record(r, "r1", "audit", b"again".to_vec())
            .await
            .unwrap()
    );
    assert!(
        s.create_record(r, "r2", "proposed", b"two".to_vec())
            .await
            .unwrap()
    );
    let e = s.get_record(r, "r1").await.unwrap().unwrap();
    assert_eq!(
        (e.state.as_str(), e.revision, e.record.as_slice()),
        ("proposed", 1, b"one".as_slice())
    );
    let (a, b) = tokio::join!(
        s.update_record(r, "r1", 1, "moving:proposed>audit", b"bob".to_vec()),
        s.update_record(r, "r1", 1, "moving:proposed>audit", b"carol".to_vec()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (won, lost) = match (&a, &b) {
        (Updated::Written(2), Updated::Now(now)) => (b"bob".as_slice(), now),
        (Updated::Now(now), Updated::Written(2)) => (b"carol".as_slice(), now),
        other => panic!("exactly one update must win: {other:?}"),
    };
    assert_eq!(lost.revision, 2);
    assert_eq!(lost.record, won);
    assert_eq!(
        s.update_record(r, "r1", 2, "audit", b"applied".to_vec())
            .await
            .unwrap(),
        Updated::Written(3)
    );
    let e = s.get_record(r, "r1").await.unwrap().unwrap();
    assert_eq!((e.state.as_str(), e.revision), ("audit", 3));
    assert_eq!(
        s.update_record(r, "nope", 1, "audit", Vec::new())
            .await
            .unwrap(),
        Updated::Missing
    );
    assert!(s.get_record(r, "nope").await.unwrap().is_none());
    assert_eq!(s.record_ids(r).await.unwrap(), ["r1", "r2"]);
    let a = Shelf::Approvals;
    assert!(s.get_record(a, "r1").await.unwrap().is_none());
    assert!(
        s.create_record(a, "r1", "pending", b"req".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(s.record_ids(a).await.unwrap(), ["r1"]);
    s.remove_record(a, "r1").await.unwrap();
    assert!(s.get_record(a, "r1").await.unwrap().is_none());
    assert!(s.record_ids(a).await.unwrap().is_empty());
    assert_eq!(s.get_record(r, "r1").await.unwrap().unwrap().revision, 3);
}

async fn poll_acquire<S: GraphStore>(s: &S, holder: &str, ttl: Duration) -> mesh_store::Lease {
    for _ in 0..100 {
        if let Some(l) = s.acquire(holder, ttl, 0).await.unwrap() {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{holder} never got the lease");
}

async fn snapshot_then_tail_misses_nothing<S: GraphStore>(s: &S) {
    assert!(s.load().await.unwrap().is_none());
    let epoch = s.next_epoch().await.unwrap();
    assert_eq!(s.epoch().await.unwrap(), epoch);
    // A first full publication has no delta; its snapshot points before any entry.
    let id0 = s.publish(publication(epoch, 0, 1, false)).await.unwrap();
    assert_eq!(id0, STREAM_START);
    let snap = s.load().await.unwrap().unwrap();
    assert_eq!(
        (
            snap.version,
            snap.epoch,
            snap.stream_id.as_str(),
            snap.graph.as_slice()
        ),
        (1, epoch, STREAM_START, &b"graph@1"[..])
    );
    let id2 = s.publish(publication(epoch, 1, 2, true)).await.unwrap();
    let snap = s.load().await.unwrap().unwrap();
    assert_eq!((snap.version, snap.stream_id.clone()), (2, id2.clone()));
    // Tail from the snapshot's id: only what came after it.
    s.publish(publication(epoch, 2, 3, true)).await.unwrap();
    s.publish(publication(epoch, 3, 4, true)).await.unwrap();
    let entries = s
        .tail(&snap.stream_id, Duration::from_millis(10), 100)
        .await
        .unwrap();
    let versions: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| (e.from_version, e.to_version))
        .collect();
    assert_eq!(versions, [(2, 3), (3, 4)]);
    assert_eq!(entries[0].delta, b"delta 2->3");
    // From the start: every entry, in order, limited by max.
    let all = s
        .tail(STREAM_START, Duration::from_millis(10), 2)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.to_version).collect::<Vec<_>>(), [2, 3]);
    // Nothing new: returns empty after the block time, also when that is longer than a Redis
    // client's default response timeout (500 ms in redis-rs), as the follower's 1 s is.
    let last = entries.last().unwrap().id.clone();
    assert!(
        s.tail(&last, Duration::from_millis(700), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn tail_wakes_on_publish<S: GraphStore + Clone>(s: &S) {
    let epoch = s.next_epoch().await.unwrap();
    s.publish(publication(epoch, 0, 1, false)).await.unwrap();
    let from = s.load().await.unwrap().unwrap().stream_id;
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = s.tail(&from, Duration::from_secs(10), 10).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.publish(publication(epoch, 1, 2, true)).await.unwrap();
    let (got, waited) = reader.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        waited < Duration::from_secs(5),
        "tail did not wake: {waited:?}"
    );
}

async fn stale_epochs_are_fenced<S: GraphStore>(s: &S) {
    let old = s.next_epoch().await.unwrap();
    let new = s.next_epoch().await.unwrap();
    s.publish(publication(new, 0, 1, false)).await.unwrap();
    match s.publish(publication(old, 1, 2, true)).await {
        Err(StoreError::Fenced { writer, current }) => assert_eq!((writer, current), (old, new)),
        other => panic!("expected fencing, got {other:?}"),
    }
    let snap = s.load().await.unwrap().unwrap();
    assert_eq!(
        (snap.version, snap.epoch),
        (1, new),
        "a fenced write changed the snapshot"
    );
    assert!(
        s.tail(STREAM_START, Duration::from_millis(10), 10)
            .await
            .unwrap()
            .is_empty(),
        "a fenced write reached the stream"
    );
}

async fn the_stream_is_trimmed_and_readers_see_the_gap<S: GraphStore>(s: &S, max_len: usize) {
    let epoch = s.next_epoch().await.unwrap();
    s.publish(publication(epoch, 0, 1, false)).await.unwrap();
    for v in 1..(max_len as u64 * 3) {
        s.publish(publication(epoch, v, v + 1, true)).await.unwrap();
    }
    let kept = s
        .tail(STREAM_START, Duration::from_millis(10), 100_000)
        .await
        .unwrap();
    assert!(kept.len() < max_len * 3 - 1, "{} entries kept", kept.len());
    // A reader at version 1 sees the first kept entry does not start at 1: it must reload.
    assert!(kept[0].from_version > 1);
    assert_eq!(kept.last().unwrap().to_version, max_len as u64 * 3);
}

fn change(key: &str, after: Option<&str>, record: &str) -> LogEntry {
    LogEntry {
        key: key.into(),
        after: after.map(str::to_owned),
        record: record.into(),
    }
}

/// The change log: appended in order under the lease held now only, with each object's
/// latest state; complete from its first write; trimmed by size and by age, after which it
/// says it is complete only from past the last change trimmed away.
async fn the_change_log_is_fenced_ordered_and_trimmed<S: GraphStore + HistoryStore>(s: &S) {
    let keep = Retention::default();
    assert_eq!(s.history_start().await.unwrap(), None, "never written");
    assert!(s.changes_after(STREAM_START, 10).await.unwrap().is_empty());
    let ttl = Duration::from_millis(300);
    let a = s.acquire("a", ttl, 0).await.unwrap().unwrap();
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    s.append_changes(
        &a,
        vec![
            change("apps/Deployment/ns/web", Some("v1"), "web created"),
            change("apps/Deployment/ns/web", Some("v2"), "web changed"),
            change("/Service/ns/web", Some("s1"), "svc created"),
        ],
        keep,
    )
    .await
    .unwrap();
    let all = s.changes_after(STREAM_START, 10).await.unwrap();
    let records: Vec<&str> = all.iter().map(|c| c.record.as_str()).collect();
    assert_eq!(records, ["web created", "web changed", "svc created"]);
    assert!(all.iter().all(|c| c.at >= before), "{all:?}");
    // Paging: strictly after the id given.
    let next = s.changes_after(&all[0].id, 1).await.unwrap();
    assert_eq!(next[0].record, "web changed");
    let start = s.history_start().await.unwrap().unwrap();
    assert!(start >= before && start <= all[0].at, "{start:?}");
    let mut objects = s.logged_objects().await.unwrap();
    objects.sort();
    assert_eq!(
        objects,
        [
            ("/Service/ns/web".to_owned(), "s1".to_owned()),
            ("apps/Deployment/ns/web".to_owned(), "v2".to_owned())
        ]
    );
    // a's lease lapses and b leads: a's late append is refused and changes nothing.
    // b holds its lease for the rest of the test.
    let b = poll_acquire(s, "b", Duration::from_secs(60)).await;
    let late = s
        .append_changes(&a, vec![change("/Service/ns/web", None, "late")], keep)
        .await;
    assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
    assert_eq!(s.changes_after(STREAM_START, 10).await.unwrap().len(), 3);
    s.append_changes(
        &b,
        vec![change("/Service/ns/web", None, "svc deleted")],
        keep,
    )
    .await
    .unwrap();
    assert_eq!(s.logged_objects().await.unwrap().len(), 1, "the deletion");
    // By size: Redis trims whole stream nodes (100 entries), so write well past them.
    let many: Vec<LogEntry> = (0..450)
        .map(|i| change(&format!("/Pod/ns/p{i}"), Some("p"), &format!("pod {i}")))
        .collect();
    let by_size = Retention {
        max_entries: 10,
        ..keep
    };
    s.append_changes(&b, many, by_size).await.unwrap();
    let kept = s.changes_after(STREAM_START, 10_000).await.unwrap();
    assert!(kept.len() < 454, "{} kept", kept.len());
    assert_eq!(kept.last().unwrap().record, "pod 449");
    assert_ne!(kept[0].record, "web created", "the oldest went first");
    let start = s.history_start().await.unwrap().unwrap();
    assert!(
        start > all[0].at,
        "complete only from the oldest change kept"
    );
    assert_eq!(start, kept[0].at);
    // By age: once the newest kept change is older than the age kept, the next append trims
    // everything before it.
    let newest = kept.last().unwrap().at;
    let by_age = Retention {
        max_age: Duration::from_millis(1),
        ..keep
    };
    let trimmed = mesh_testkit::poll(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            s.append_changes(
                &b,
                vec![change("/Pod/ns/late", Some("p"), "late pod")],
                by_age,
            )
            .await
            .unwrap();
            let left = s.changes_after(STREAM_START, 10_000).await.unwrap();
            left.iter().all(|c| c.at > newest).then_some(left)
        },
    )
    .await
    .expect("old changes trimmed by age");
    assert!(trimmed.iter().all(|c| c.record == "late pod"));
    assert_eq!(s.history_start().await.unwrap().unwrap(), trimmed[0].at);
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    the_change_log_is_fenced_ordered_and_trimmed(&MemoryStore::new(10)).await;
    snapshot_then_tail_misses_nothing(&MemoryStore::new(1000)).await;
    tail_wakes_on_publish(&MemoryStore::new(1000)).await;
    stale_epochs_are_fenced(&MemoryStore::new(1000)).await;
    the_stream_is_trimmed_and_readers_see_the_gap(&MemoryStore::new(10), 10).await;
    the_lease_elects_one_writer_and_fences_the_last(&MemoryStore::new(10)).await;
    plans_are_single_use_expiring_and_bound_to_their_owner(&MemoryStore::new(10)).await;
    approvals_move_once_and_expire(&MemoryStore::new(10)).await;
    alert_state_is_shared_and_marks_once(&MemoryStore::new(10)).await;
    records_update_at_their_revision_only(&MemoryStore::new(10)).await;
}

fn redis_store(url: &str, prefix: &str, max_len: usize) -> std::sync::Arc<RedisStore> {
    std::sync::Arc::new(RedisStore::new(url, prefix, max_len, Duration::from_secs(2)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let redis = Redis::start().await;
    snapshot_then_tail_misses_nothing(&redis_store(&redis.url, "a:", 1000)).await;
    tail_wakes_on_publish(&redis_store(&redis.url, "b:", 1000)).await;
    stale_epochs_are_fenced(&redis_store(&redis.url, "c:", 1000)).await;
    // MAXLEN ~ trims whole macro nodes (100 entries by default), so ask for little and write lots.
    the_stream_is_trimmed_and_readers_see_the_gap(&redis_store(&redis.url, "d:", 50), 100).await;
    the_lease_elects_one_writer_and_fences_the_last(&redis_store(&redis.url, "e:", 50)).await;
    plans_are_single_use_expiring_and_bound_to_their_owner(&redis_store(&redis.url, "f:", 50))
        .await;
    approvals_move_once_and_expire(&redis_store(&redis.url, "g:", 50)).await;
    alert_state_is_shared_and_marks_once(&redis_store(&redis.url, "h:", 50)).await;
    records_update_at_their_revision_only(&redis_store(&redis.url, "i:", 50)).await;
    the_change_log_is_fenced_ordered_and_trimmed(&redis_store(&redis.url, "j:", 50)).await;
}

/// TLS (`rediss://`) with a private CA: the whole contract holds over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_meets_the_contract() {
    let redis = Redis::start_tls().await;
    let ca = redis.tls_ca.clone().unwrap().into_bytes();
    let tls = |prefix: &str| {
        std::sync::Arc::new(
            RedisStore::with_ca(
                &redis.url,
                Some(ca.clone()),
                prefix,
                1000,
                Duration::from_secs(2),
            )
            .unwrap(),
        )
    };
    snapshot_then_tail_misses_nothing(&tls("a:")).await;
    the_lease_elects_one_writer_and_fences_the_last(&tls("b:")).await;
    // Without the CA the server's certificate is not trusted: an error, not a hang.
    let untrusted = RedisStore::new(&redis.url, "c:", 10, Duration::from_secs(2)).unwrap();
    assert!(matches!(
        untrusted.load().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrefreshed_snapshot_expires() {
    let redis = Redis::start().await;
    let s = RedisStore::new(&redis.url, "ttl:", 10, Duration::from_secs(2))
        .unwrap()
        .with_snapshot_ttl(Duration::from_millis(300));
    let e = s.next_epoch().await.unwrap();
    s.publish(publication(e, 0, 1, false)).await.unwrap();
    assert!(s.load().await.unwrap().is_some());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.load().await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the snapshot outlived its TTL by seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_clusters_apart_and_outages_are_errors_not_hangs() {
    let redis = Redis::start().await;
    let (one, two) = (
        redis_store(&redis.url, "one:", 100),
        redis_store(&redis.url, "two:", 100),
    );
    let e = one.next_epoch().await.unwrap();
    one.publish(publication(e, 0, 1, false)).await.unwrap();
    assert!(two.load().await.unwrap().is_none());
    assert_eq!(one.keys().snapshot, "one:snapshot");
    drop(redis);
    let started = Instant::now();
    let err = one.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        one.tail(STREAM_START, Duration::from_millis(100), 1).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[test]
fn bad_urls_are_refused() {
    let e = RedisStore::new("http://x", "mesh:", 10, Duration::from_secs(1)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("store unavailable: invalid Redis URL \"http://x\""),
        "{e}"
    );
}
