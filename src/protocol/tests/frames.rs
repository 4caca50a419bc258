//! Protocol tests: broken frames (garbage, trailing bytes, unknown kinds,
//! truncation, oversized lengths) are clear errors.

use super::*;
use crate::protocol::frame::{decode, encode, read_frame};

#[test]
fn garbage_is_a_decode_error() {
    let err = decode::<ClientRequest>(b"\xc1\xc1\xc1 not msgpack").unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    let err = decode::<ClientRequest>(&[]).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
}

#[test]
fn trailing_bytes_are_refused() {
    let frame = encode(&Hello::new(Role::Client)).unwrap();
    let mut body = frame[4..].to_vec();
    body.push(0);
    let err = decode::<Hello>(&body).unwrap_err();
    assert!(err.to_string().contains("unexpected bytes"), "{err}");
}

#[test]
fn unknown_message_kind_is_a_decode_error() {
    // A well-formed map naming a request kind this version does not know.
    let mut body = Vec::new();
    rmp_serde::encode::write_named(&mut body, &serde_json::json!({"id": 1, "body": "explode"}))
        .unwrap();
    let err = decode::<ClientRequest>(&body).unwrap_err();
    assert!(err.to_string().contains("explode"), "{err}");
}

#[test]
fn truncated_frames_are_reported() {
    let frame = encode(&Hello::new(Role::Client)).unwrap();
    let cut = &frame[..frame.len() - 3];
    let err = block_on(read_frame(&mut &cut[..], MAX_FRAME)).unwrap_err();
    assert!(
        matches!(err, FrameError::Truncated { want, .. } if want == frame.len()),
        "{err:?}"
    );
    let err = block_on(read_frame(&mut &frame[..2], MAX_FRAME)).unwrap_err();
    assert!(matches!(err, FrameError::Truncated { got: 2, want: 4 }));
    let err = block_on(read_frame(&mut &[][..], MAX_FRAME)).unwrap_err();
    assert!(matches!(err, FrameError::Closed));
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    // Announces 4 GiB - 1 and sends nothing else: must not try to allocate it.
    let bytes = [0xff, 0xff, 0xff, 0xff];
    let err = block_on(read_frame(&mut &bytes[..], MAX_HANDSHAKE_FRAME)).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: MAX_HANDSHAKE_FRAME
            }
        ),
        "{err:?}"
    );
}
