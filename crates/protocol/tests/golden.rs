//! Golden frames: one file of exact frame bytes that this crate and the
//! Python runtime's codec (`python/tests/test_codec.py`) both encode and
//! decode, so the two implementations of the protocol cannot drift apart.
//!
//! `MULTILOOP_BLESS=1 cargo test -p multiloop-protocol --test golden`
//! rewrites the file after a deliberate change of the protocol (bump
//! `PROTOCOL_VERSION` with it).

use bytes::{Bytes, BytesMut};
use multiloop_protocol::{
    decode_from_worker, decode_to_worker, Added, ErrorKind, FrameCodec, FromWorker, Heartbeat,
    Held, Hello, Outcome, Task, TaskResult, ToWorker, Usage, PROTOCOL_VERSION,
};
use tokio_util::codec::Encoder;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/frames.txt");

/// Either direction's message, for one table.
enum Message {
    ToWorker(ToWorker),
    FromWorker(FromWorker),
}

fn cases() -> Vec<(&'static str, Message)> {
    use Message::{FromWorker as From, ToWorker as To};
    let result = |id, micros, outcome, retry| TaskResult {
        id,
        micros,
        outcome,
        retry,
        added: Vec::new(),
    };
    let error = |kind, message: &str| Outcome::Err {
        kind,
        message: message.to_string(),
    };
    vec![
        (
            "hello",
            From(FromWorker::Hello(Hello {
                version: PROTOCOL_VERSION,
                pid: 4242,
                kinds: vec!["sim".into(), "chaos".into()],
                runtime: "python 3.11.7 asyncio".into(),
            })),
        ),
        (
            "tasks",
            To(ToWorker::Tasks(vec![
                Task {
                    id: 0,
                    payload: Bytes::from_static(br#"{"sleep_ms":1,"iters":10}"#),
                },
                Task {
                    id: 300,
                    payload: Bytes::from_static(b"[1,2]"),
                },
                Task {
                    id: u64::MAX,
                    payload: Bytes::from_static("\"h\u{e9}\"".as_bytes()),
                },
            ])),
        ),
        ("tasks_empty", To(ToWorker::Tasks(vec![]))),
        (
            "results_ok",
            From(FromWorker::Results(vec![
                result(
                    7,
                    1234,
                    Outcome::Ok(Bytes::from_static(br#"{"sum":45}"#)),
                    false,
                ),
                result(128, 0, Outcome::Ok(Bytes::from_static(b"null")), true),
            ])),
        ),
        (
            "results_errors",
            From(FromWorker::Results(vec![
                result(
                    1,
                    5_000_000,
                    error(ErrorKind::Timeout, "task took longer than 5000 ms"),
                    false,
                ),
                result(
                    2,
                    10,
                    error(ErrorKind::Failed, "ValueError: bad \u{e9}"),
                    true,
                ),
                result(
                    3,
                    11,
                    error(ErrorKind::Panicked, "handler panicked: boom"),
                    false,
                ),
                result(4, 12, error(ErrorKind::Crashed, ""), false),
                result(
                    5,
                    13,
                    error(ErrorKind::BadInput, "missing field `iters`"),
                    false,
                ),
            ])),
        ),
        (
            "results_added",
            From(FromWorker::Results(vec![
                TaskResult {
                    added: vec![
                        Added {
                            payload: Bytes::from_static(br#"{"url":"https://a.example/x"}"#),
                            key: Some("https://a.example/x".into()),
                        },
                        Added {
                            payload: Bytes::from_static("\"\u{e9}t\u{e9}\"".as_bytes()),
                            key: None,
                        },
                    ],
                    ..result(9, 77, Outcome::Ok(Bytes::from_static(b"{}")), false)
                },
                result(10, 1, error(ErrorKind::Failed, "no"), false),
            ])),
        ),
        (
            "heartbeat",
            From(FromWorker::Heartbeat(Heartbeat {
                lag_us: 150,
                max_lag_us: 70_000,
                in_flight: 1024,
                done: 1_000_000,
                cpu_us: 12_345_678,
                rss_bytes: 52_428_800,
                held: None,
                blocked_us: 0,
            })),
        ),
        (
            "heartbeat_held",
            From(FromWorker::Heartbeat(Heartbeat {
                lag_us: 31_000_000,
                max_lag_us: 31_000_000,
                in_flight: 3,
                done: 17,
                cpu_us: 31_500_000,
                rss_bytes: 8_388_608,
                held: Some(Held {
                    task: Some(17),
                    for_us: 31_000_000,
                }),
                blocked_us: 31_020_000,
            })),
        ),
        (
            "heartbeat_held_outside_task",
            From(FromWorker::Heartbeat(Heartbeat {
                held: Some(Held {
                    task: None,
                    for_us: 250_000,
                }),
                ..Heartbeat::default()
            })),
        ),
        (
            "bye",
            From(FromWorker::Bye(Usage {
                user_us: 1_500_000,
                system_us: 250_000,
                max_rss_bytes: 104_857_600,
            })),
        ),
    ]
}

fn encode(message: &Message) -> Vec<u8> {
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    match message {
        Message::ToWorker(m) => codec.encode(m, &mut buf),
        Message::FromWorker(m) => codec.encode(m, &mut buf),
    }
    .expect("golden messages fit in a frame");
    buf.to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("golden file holds hex"))
        .collect()
}

fn render() -> String {
    let mut out = String::from(
        "# Golden frames of the multiloop protocol: NAME, a tab, then the whole frame\n\
         # (4-byte big-endian length + postcard payload) in hex. Written by\n\
         # crates/protocol/tests/golden.rs; read by it and by python/tests/test_codec.py.\n",
    );
    out.push_str(&format!("# protocol version {PROTOCOL_VERSION}\n"));
    for (name, message) in cases() {
        out.push_str(&format!("{name}\t{}\n", hex(&encode(&message))));
    }
    out
}

#[test]
fn golden_frames_match_the_file() {
    let expected = render();
    if std::env::var_os("MULTILOOP_BLESS").is_some() {
        std::fs::write(GOLDEN, &expected).expect("write golden file");
        return;
    }
    let actual = std::fs::read_to_string(GOLDEN).expect("read golden file");
    assert_eq!(
        actual, expected,
        "the protocol's encoding changed: bump PROTOCOL_VERSION, rerun with MULTILOOP_BLESS=1 \
         and update the Python codec"
    );
}

#[test]
fn golden_frames_decode_to_their_messages() {
    let text = std::fs::read_to_string(GOLDEN).expect("read golden file");
    let frames: Vec<(&str, Vec<u8>)> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, hex) = line.split_once('\t').expect("NAME<TAB>HEX");
            (name, unhex(hex))
        })
        .collect();
    let cases = cases();
    assert_eq!(frames.len(), cases.len());
    for ((name, frame), (case_name, message)) in frames.into_iter().zip(cases) {
        assert_eq!(name, case_name);
        let payload = Bytes::from(frame[4..].to_vec());
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            payload.len(),
            "{name}: length prefix"
        );
        match message {
            Message::ToWorker(m) => assert_eq!(decode_to_worker(&payload).unwrap(), m, "{name}"),
            Message::FromWorker(m) => {
                assert_eq!(decode_from_worker(&payload).unwrap(), m, "{name}")
            }
        }
    }
}
