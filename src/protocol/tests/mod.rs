//! Round trips of every message and the ways a peer can break the rules.
//! This file holds the shared helpers (a round trip through a frame, a
//! one-off runtime, a sample build); the tests live by conversation:
//! `handshake.rs`, `worker.rs` (steps, output, transfers), `client.rs`
//! (bbctl's requests and replies), `frames.rs` (broken frames) and
//! `fuzz.rs` (property tests: any bytes, any limit).

mod client;
mod frames;
mod fuzz;
mod handshake;
mod worker;

use super::frame::{decode, encode};
use super::*;

fn round_trip<T>(msg: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode(&msg).expect("encode");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "length prefix");
    let back: T = decode(&frame[4..]).expect("decode");
    assert_eq!(back, msg);
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn summary() -> BuildSummary {
    BuildSummary {
        id: 7,
        request_id: 3,
        builder: "hello".into(),
        worker: "local-1".into(),
        generation: 2,
        config_hash: "00ff".into(),
        result: Some(BuildResult::Failure),
        reason: Some("step `say` exited with code 1".into()),
        started_at_ms: 1,
        finished_at_ms: Some(2),
        source: None,
    }
}
