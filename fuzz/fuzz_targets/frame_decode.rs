//! Arbitrary bytes into the frame reader and into the decoder of every
//! message type on the wire. Nothing may panic, hang or allocate without
//! bound; whatever decodes must encode again and decode to the same value.
//!
//! Input layout: the first byte picks the frame limit in force (so the
//! limit check itself is exercised at many sizes); the rest is what a peer
//! would send on the socket. The rest is also handed to every decoder as
//! one frame body, so the decoders get coverage without the fuzzer first
//! having to discover a valid length prefix.

#![no_main]

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bbctl::protocol::frame::{FrameError, decode, encode, read_frame};
use bbctl::protocol::{
    ClientRequest, Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, MasterToWorker, ServerMsg,
    WorkerToMaster,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Limits the first input byte chooses from (modulo their count).
const LIMITS: [usize; 8] = [0, 1, 4, 17, 1024, 4096, MAX_HANDSHAKE_FRAME, MAX_FRAME];

/// Reading from a byte slice never waits, so one poll finishes the future.
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a byte slice returned Pending"),
    }
}

/// Decode `body` as a `T`; if that works, the message must survive an
/// encode/decode round trip unchanged.
fn decode_as<T>(body: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match decode::<T>(body) {
        Ok(msg) => {
            let frame = encode(&msg).expect("a decoded message must encode");
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4, "length prefix of a re-encoded frame");
            let again: T = decode(&frame[4..]).expect("a re-encoded message must decode");
            assert_eq!(again, msg, "round trip changed a decoded message");
        }
        Err(e) => {
            assert!(matches!(e, FrameError::Decode(_)), "unexpected error {e:?}");
            // The text goes to logs and refusals: formatting must not panic.
            let _ = e.to_string();
        }
    }
}

fn decode_all(body: &[u8]) {
    decode_as::<Hello>(body);
    decode_as::<HelloReply>(body);
    decode_as::<ClientRequest>(body);
    decode_as::<ServerMsg>(body);
    decode_as::<WorkerToMaster>(body);
    decode_as::<MasterToWorker>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let max = LIMITS[pick as usize % LIMITS.len()];
    decode_all(stream);
    let mut rest = stream;
    loop {
        let before = rest.len();
        match poll_once(read_frame(&mut rest, max)) {
            Ok(body) => {
                assert!(body.len() <= max, "a frame over the limit was returned");
                assert_eq!(before - rest.len(), 4 + body.len(), "bytes consumed");
                decode_all(&body);
            }
            Err(FrameError::TooLarge { len, max: m }) => {
                assert!(len > m && m == max, "TooLarge {len} > {m} with limit {max}");
                break;
            }
            Err(FrameError::Closed) => {
                assert_eq!(before, 0, "Closed with {before} bytes left");
                break;
            }
            Err(e @ FrameError::Truncated { .. }) => {
                assert!(e.is_disconnect());
                break;
            }
            Err(e) => panic!("unexpected error from read_frame on a slice: {e:?}"),
        }
    }
});
