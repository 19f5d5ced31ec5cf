//! Arbitrary items written through a `FramedWriter` (`Writer::framed` with
//! `LinesCodec`), by `send` (waits for room) and `try_send` (refused at once when the
//! queue is full), over a mock transport that takes arbitrary partial amounts, would
//! block, and may fail: nothing panics; every item is answered; the transport's stream is
//! exactly the accepted items' encodings, in order (a prefix of it when the transport
//! failed); items refused with `QueueFull` are not on the wire and hand their bytes back
//! whole; after a failure every later item is refused.
//!
//! Input layout: byte 0 picks the high watermark (bits 0-2) and whether the transport
//! fails after its script (bit 3); byte 1 says how many of the next bytes script the
//! transport (each a `sendv` step); the rest are items: a control byte (bit 0: `send` or
//! `try_send`; bits 1-7: the item's length) and that many bytes of the item.

#![no_main]

use std::io;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sockactor::messages::Handle;
use sockactor::{
    FramedWriteError, MockTransport, QueueConfig, SendStep, Socket, SocketConfig, WriteError,
};
use sockactor_fuzz::{mock_peer, run_paused, settle};
use tokio_util::codec::LinesCodec;

fn step(b: u8) -> SendStep {
    match b % 4 {
        0 => SendStep::Accept(usize::from(b / 4) + 1),
        1 => SendStep::WouldBlock(Duration::from_millis(u64::from(b / 4))),
        2 => SendStep::AcceptAll,
        // At least one byte: a transport answering `Accepted(0)` breaks the contract
        // (the socket fails, as the `writes_stay_ordered` proptest checks).
        _ => SendStep::Slow {
            bytes: usize::from(b / 4) + 1,
            after: Duration::from_millis(1),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let high = 16usize << (data[0] & 7);
    let fails = data[0] & 8 != 0;
    let script_len = usize::from(data[1]).min(data.len() - 2);
    let script: Vec<SendStep> = data[2..2 + script_len].iter().map(|b| step(*b)).collect();
    let mut rest = &data[2 + script_len..];
    let mut items = Vec::new();
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control >> 1).min(tail.len());
        let text = String::from_utf8_lossy(&tail[..len]).into_owned();
        items.push((control & 1 == 0, text));
        rest = &tail[len..];
    }
    run_paused(|| async move {
        let mock = MockTransport::start();
        let mut steps = script;
        if fails {
            steps.push(SendStep::Fail(io::ErrorKind::ConnectionReset));
        }
        mock.script_sendv(Handle(1), steps);
        let config = SocketConfig {
            queue: QueueConfig {
                high_watermark: high,
                low_watermark: high / 2,
                ..QueueConfig::default()
            },
            ..SocketConfig::default()
        };
        let (mut writer, _frames) = Socket::builder()
            .functions(mock.functions())
            .config(config)
            .connect_framed(mock_peer(), LinesCodec::new())
            .await
            .expect("connect");
        let mut expected = Vec::new();
        let mut failed = false;
        for (wait, text) in items {
            let encoded = format!("{text}\n").into_bytes();
            let answer = if wait {
                // A bounded wait: a failed transport may leave no room ever.
                match tokio::time::timeout(Duration::from_secs(60), writer.send(text)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        assert!(
                            failed || fails,
                            "a send waited a minute on a working transport"
                        );
                        break;
                    }
                }
            } else {
                writer.try_send(text)
            };
            match answer {
                Ok(()) => {
                    assert!(!failed, "an item taken after the socket failed");
                    expected.extend_from_slice(&encoded);
                }
                Err(FramedWriteError::Write(WriteError::QueueFull { payload, .. })) => {
                    assert!(!wait, "send waits for room instead");
                    assert_eq!(payload.len(), encoded.len(), "the whole item handed back");
                }
                Err(FramedWriteError::Write(_)) => {
                    assert!(fails, "refused on a transport that never fails");
                    failed = true;
                }
                Err(FramedWriteError::Encode(e)) => panic!("LinesCodec refused: {e}"),
                Err(e) => panic!("unexpected error: {e}"),
            }
            settle().await;
        }
        // Let everything queued go out.
        tokio::time::sleep(Duration::from_secs(600)).await;
        settle().await;
        let written = mock.written(Handle(1));
        if fails {
            assert!(
                expected.starts_with(&written),
                "the wire is not a prefix of the accepted items"
            );
        } else {
            assert!(
                written == expected,
                "the wire differs from the accepted items"
            );
        }
    });
});
