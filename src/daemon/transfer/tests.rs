//! Unit tests of the master side of uploads and downloads (transfer/).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::daemon::messages::Command;
use crate::protocol::transfer::{FILE_CHUNK, PARTIAL_PREFIX, sha256_hex};
use crate::protocol::{ArtifactInfo, FileBegin, FileChunk, FileEnd};

fn transfers(dir: &Path) -> (Transfers, mpsc::Receiver<Command>) {
    let dirs = Dirs::new(dir, None);
    dirs.prepare().unwrap();
    let (tx, rx) = mpsc::channel(8);
    let master = MasterHandle::new(
        tx,
        tokio::sync::broadcast::channel(1).0,
        tokio::sync::broadcast::channel(1).0,
    );
    (Transfers::new(dirs, master, WorkerLimits::default()), rx)
}

/// Answer artifact records like the master loop does.
fn recorder(mut rx: mpsc::Receiver<Command>) -> tokio::task::JoinHandle<Vec<ArtifactInfo>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(cmd) = rx.recv().await {
            if let Command::Artifact {
                artifact, reply, ..
            } = cmd
            {
                seen.push(artifact);
                let _ = reply.send(Ok(()));
            }
        }
        seen
    })
}

fn upload_action(max: Option<u64>) -> WireAction {
    WireAction::Upload {
        from: "x".into(),
        max_size: max,
        mode: 0o640,
    }
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("artifacts/1"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(PARTIAL_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_upload_is_verified_stored_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, rx) = transfers(dir.path());
    let seen = recorder(rx);
    t.on_start(1, 0, &upload_action(None));
    let data = vec![5u8; 100_000];
    assert!(
        t.on_begin(FileBegin {
            build: 1,
            step: 0,
            name: "sub/a.bin".into(),
            size: data.len() as u64,
            mode: 0o777,
        })
        .is_empty()
    );
    for (i, piece) in data.chunks(FILE_CHUNK).enumerate() {
        let out = t.on_chunk(FileChunk {
            build: 1,
            step: 0,
            offset: (i * FILE_CHUNK) as u64,
            data: piece.to_vec(),
        });
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(
        t.on_end(FileEnd {
            build: 1,
            step: 0,
            sha256: sha256_hex(&data),
        })
        .is_empty(),
        "the ack comes once the file is stored"
    );
    let out = t.next_stored().await;
    assert_eq!(
        out,
        vec![MasterToWorker::FileAck {
            build: 1,
            step: 0,
            received: 100_000
        }]
    );
    let stored = dir.path().join("artifacts/1/sub/a.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), data);
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "the configured mode, not the worker's");
    assert!(partials(dir.path()).is_empty());
    assert_eq!(
        t.on_step_end((1, 0), StepEnd::Exited { code: 0 }),
        StepEnd::Exited { code: 0 }
    );
    drop(t);
    assert_eq!(seen.await.unwrap()[0].name, "sub/a.bin");
}

#[tokio::test]
async fn too_big_or_corrupt_uploads_leave_nothing_and_fail_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, rx) = transfers(dir.path());
    let _seen = recorder(rx);
    t.on_start(1, 0, &upload_action(Some(10)));
    // Announced too big: refused at once.
    let out = t.on_begin(FileBegin {
        build: 1,
        step: 0,
        name: "big".into(),
        size: 11,
        mode: 0o644,
    });
    assert!(
        matches!(&out[..], [MasterToWorker::FileRefused { reason, .. }] if reason.contains("max_size"))
    );
    // Later frames of the refused step are ignored; the end is a failure.
    assert!(
        t.on_chunk(FileChunk {
            build: 1,
            step: 0,
            offset: 0,
            data: vec![0; 11]
        })
        .is_empty()
    );
    assert!(matches!(
        t.on_step_end((1, 0), StepEnd::Exited { code: 0 }),
        StepEnd::TransferFailed { error } if error.contains("max_size")
    ));
    // A wrong hash: the partial file goes, nothing is stored.
    t.on_start(1, 1, &upload_action(Some(10)));
    t.on_begin(FileBegin {
        build: 1,
        step: 1,
        name: "c".into(),
        size: 3,
        mode: 0o644,
    });
    t.on_chunk(FileChunk {
        build: 1,
        step: 1,
        offset: 0,
        data: b"abc".to_vec(),
    });
    assert_eq!(partials(dir.path()).len(), 1);
    assert!(
        t.on_end(FileEnd {
            build: 1,
            step: 1,
            sha256: sha256_hex(b"abd"),
        })
        .is_empty()
    );
    let out = t.next_stored().await;
    assert!(
        matches!(&out[..], [MasterToWorker::FileRefused { reason, .. }] if reason.contains("mismatch"))
    );
    assert!(partials(dir.path()).is_empty());
    assert!(!dir.path().join("artifacts/1/c").exists());
    // A link that goes away mid-file deletes its partial file.
    t.on_start(1, 2, &upload_action(None));
    t.on_begin(FileBegin {
        build: 1,
        step: 2,
        name: "d".into(),
        size: 3,
        mode: 0o644,
    });
    t.on_chunk(FileChunk {
        build: 1,
        step: 2,
        offset: 0,
        data: b"ab".to_vec(),
    });
    assert_eq!(partials(dir.path()).len(), 1);
    drop(t);
    assert!(partials(dir.path()).is_empty());
}

#[tokio::test]
async fn a_download_streams_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, _rx) = transfers(dir.path());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("files/in.bin"), &data).unwrap();
    let action = WireAction::Download {
        from: "in.bin".into(),
        to: "x".into(),
        max_size: None,
        mode: 0o644,
    };
    let first = t.on_start(1, 0, &action);
    assert!(matches!(&first[..], [MasterToWorker::FileBegin(b)] if b.size == 3_000_000));
    let mut got = Vec::new();
    let mut sha = None;
    while sha.is_none() {
        let mut unacked = 0u64;
        while t.can_send() {
            for msg in t.pump() {
                match msg {
                    MasterToWorker::FileChunk(c) => {
                        assert_eq!(c.offset, got.len() as u64);
                        unacked += c.data.len() as u64;
                        got.extend_from_slice(&c.data);
                    }
                    MasterToWorker::FileEnd(e) => sha = Some(e.sha256),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(unacked <= crate::protocol::transfer::WINDOW + FILE_CHUNK as u64);
        t.on_ack((1, 0), got.len() as u64);
    }
    assert_eq!(got, data);
    assert_eq!(sha.unwrap(), sha256_hex(&data));
    // Sources outside the transfer dir are refused with a reason.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("files/out")).unwrap();
    let out = t.on_start(
        1,
        1,
        &WireAction::Download {
            from: "out".into(),
            to: "x".into(),
            max_size: None,
            mode: 0o644,
        },
    );
    assert!(
        matches!(&out[..], [MasterToWorker::FileRefused { reason, .. }] if reason.contains("outside the transfer dir"))
    );
}
