use super::*;

fn log() -> EventLog {
    EventLog {
        run: 7,
        kept: Mutex::new(Kept {
            next: 1,
            events: VecDeque::new(),
            owners: Owners::default(),
        }),
        live: broadcast::channel(16).0,
    }
}

fn event(n: u64) -> Event {
    Event {
        at_ms: n,
        generation: 1,
        kind: EventKind::WorkerConnected {
            worker: format!("w{n}"),
        },
    }
}

#[test]
fn a_resumed_client_gets_what_followed_its_id_and_nothing_else() {
    let log = log();
    for n in 1..=5 {
        log.push(&event(n));
    }
    assert_eq!(log.resume_point(Some("7.3")), Ok(Some(3)));
    assert_eq!(log.resume_point(Some("6.3")), Err(()));
    assert_eq!(log.resume_point(Some("junk")), Err(()));
    assert_eq!(log.resume_point(None), Ok(None));
    let (backlog, _, mut rx) = log.follow(Some(3));
    let seqs: Vec<u64> = backlog.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5]);
    log.push(&event(6));
    assert_eq!(rx.try_recv().unwrap().seq, 6);
    assert_eq!(log.id(6), "7.6");
}

#[test]
fn an_id_older_than_the_log_keeps_cannot_resume() {
    let log = log();
    for n in 1..=(KEEP as u64 + 10) {
        log.push(&event(n));
    }
    assert!(log.follow(Some(5)).0.is_none());
    assert_eq!(log.follow(Some(11)).0.unwrap().len(), KEEP - 1);
}

fn at(kind: EventKind) -> Event {
    Event {
        at_ms: 1,
        generation: 1,
        kind,
    }
}

#[test]
fn a_page_stream_carries_what_its_page_shows() {
    let log = log();
    log.push(&at(EventKind::BuildQueued {
        request: 1,
        builder: "a".into(),
        source: None,
    }));
    log.push(&at(EventKind::BuildStarted {
        build: 9,
        request: 1,
        builder: "a".into(),
        worker: "w".into(),
        source: None,
    }));
    log.push(&at(EventKind::StepStarted {
        build: 9,
        step: 0,
        name: "s".into(),
    }));
    log.push(&at(EventKind::BuildQueued {
        request: 2,
        builder: "b".into(),
        source: None,
    }));
    log.push(&at(EventKind::RequestCancelled {
        request: 2,
        reason: "x".into(),
    }));
    log.push(&event(6));
    log.push(&at(EventKind::Lagged { missed: 1 }));
    let (all, _, _) = log.follow(Some(0));
    let all = all.unwrap();
    let seqs = |t: Topic| -> Vec<u64> {
        all.iter()
            .filter(|e| t.wants(&e.scope))
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(Topic::All), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(Topic::Build(9)), [2, 3, 7]);
    assert_eq!(seqs(Topic::Builder("a".into())), [1, 2, 3, 7]);
    assert_eq!(seqs(Topic::Builder("b".into())), [4, 5, 7]);
    assert_eq!(seqs(Topic::Queue), [1, 2, 4, 5, 7]);
}

#[test]
fn owners_are_bounded() {
    let mut o = Owners::default();
    let name: Arc<str> = Arc::from("a");
    for i in 0..(KNOWN as u64 + 10) {
        o.learn(true, i, &name);
    }
    assert_eq!(o.builds.len(), KNOWN);
    assert!(!o.builds.contains_key(&0));
}

#[test]
fn accept_asks_for_a_stream() {
    let mut h = HeaderMap::new();
    assert!(!wants_stream(&h));
    h.insert("accept", HeaderValue::from_static("text/html,*/*;q=0.8"));
    assert!(!wants_stream(&h));
    h.insert("accept", HeaderValue::from_static("Text/Event-Stream; q=1"));
    assert!(wants_stream(&h));
}
