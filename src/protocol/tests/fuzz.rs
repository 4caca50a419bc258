//! Protocol property tests (run in CI): arbitrary bytes never panic a
//! decoder, and `read_frame` keeps any limit.

use proptest::prelude::*;

use super::*;
use crate::protocol::frame::{decode, read_frame};

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientRequest>(&bytes);
        let _ = decode::<Hello>(&bytes);
        let _ = decode::<WorkerToMaster>(&bytes);
        let _ = block_on(read_frame(&mut &bytes[..], 1024));
    }
}

proptest! {
    /// `read_frame` under any limit: it returns a body within the limit and
    /// consumes exactly its frame, or fails with the error that fits the
    /// bytes; every decoder copes with whatever body it returns.
    #[test]
    fn read_frame_keeps_any_limit(
        max in prop_oneof![0usize..64, Just(MAX_HANDSHAKE_FRAME), Just(MAX_FRAME)],
        len in prop_oneof![0u32..80, any::<u32>()],
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let mut rest = &stream[..];
        match block_on(read_frame(&mut rest, max)) {
            Ok(frame) => {
                prop_assert!(frame.len() <= max);
                prop_assert_eq!(frame.len(), len as usize);
                prop_assert_eq!(&frame[..], &body[..len as usize]);
                prop_assert_eq!(rest.len(), body.len() - len as usize);
                let _ = decode::<ClientRequest>(&frame);
                let _ = decode::<Hello>(&frame);
                let _ = decode::<HelloReply>(&frame);
                let _ = decode::<ServerMsg>(&frame);
                let _ = decode::<WorkerToMaster>(&frame);
                let _ = decode::<MasterToWorker>(&frame);
            }
            Err(FrameError::TooLarge { len: l, max: m }) => {
                prop_assert!(l > m && m == max && l == len as usize);
            }
            Err(FrameError::Truncated { got, want }) => {
                prop_assert!(len as usize <= max && body.len() < len as usize);
                prop_assert_eq!((got, want), (4 + body.len(), 4 + len as usize));
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }
}
