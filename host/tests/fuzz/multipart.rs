//! Multipart uploads of a version (`PUT /v1/models/{m}/versions/{v}`): parts named at random, sent
//! twice or not at all, too large, a component that is not one, a `component_sha256` that is not in
//! the store or not a sha256 at all, config and tests that are not JSON, too many graphs, framing
//! that is broken; and raw `application/wasm` bodies. For well-framed bodies an oracle walks the
//! parts as the handler must and says which status comes back; for broken framing any 4xx will do.
//! After every request the upload area is empty again (nothing half-uploaded is left behind).

use std::collections::BTreeSet;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::alloc::measure;
use crate::app::{App, MAX_UPLOAD};

const BOUNDARY: &str = "ferry-fuzz-boundary-7d1e";

fn component() -> Vec<u8> {
    wat::parse_str("(component)").unwrap()
}

fn core_module() -> Vec<u8> {
    wat::parse_str("(module)").unwrap()
}

/// What a part holds.
#[derive(Debug, Clone)]
enum Content {
    Component,
    CoreModule,
    /// The component layer's header, then junk.
    Headed(Vec<u8>),
    Garbage(Vec<u8>),
    Config,
    BadJson,
    Tests,
    BadTests,
    NotUtf8,
    /// The sha256 of the component, which the store has (in upper case, with whitespace: as clients
    /// write it).
    KnownSha,
    UnknownSha,
    /// `n` bytes of text.
    Long(usize),
    /// Just under or over the upload cap.
    Sized(i64),
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Component => component(),
            Content::CoreModule => core_module(),
            Content::Headed(junk) => [b"\0asm\x0d\x00\x01\x00".as_slice(), junk].concat(),
            Content::Garbage(g) => g.clone(),
            Content::Config => br#"{"threshold": 0.5}"#.to_vec(),
            Content::BadJson => b"{\"threshold\": ".to_vec(),
            Content::Tests => br#"{"cases": []}"#.to_vec(),
            Content::BadTests => br#"{"cases": 5}"#.to_vec(),
            Content::NotUtf8 => b"{\"a\": \"\xff\xfe\"}".to_vec(),
            Content::KnownSha => format!(
                " {}\n",
                ferry::runtime::sha256_hex(&component()).to_uppercase()
            )
            .into_bytes(),
            Content::UnknownSha => "ab".repeat(32).into_bytes(),
            Content::Long(n) => vec![b'a'; *n],
            Content::Sized(delta) => vec![b'x'; (MAX_UPLOAD as i64 + delta).max(0) as usize],
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        6 => Just(Content::Component),
        1 => Just(Content::CoreModule),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Content::Headed),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Garbage),
        3 => Just(Content::Config),
        1 => Just(Content::BadJson),
        2 => Just(Content::Tests),
        1 => Just(Content::BadTests),
        1 => Just(Content::NotUtf8),
        3 => Just(Content::KnownSha),
        1 => Just(Content::UnknownSha),
        1 => prop_oneof![Just(1024usize), Just(1025), Just(100_000), Just(8 << 20)].prop_map(Content::Long),
        1 => (-1..=1i64).prop_map(Content::Sized),
    ]
}

#[derive(Debug, Clone)]
struct Part {
    /// `None`: a part without a `name` in its Content-Disposition.
    name: Option<String>,
    filename: bool,
    content: Content,
}

fn part_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        16 => prop::sample::select(vec![
            "component", "component_sha256", "weights", "config", "tests", "graph:g1", "graph:g2",
        ])
        .prop_map(|s| Some(s.to_owned())),
        2 => (0..20u8).prop_map(|i| Some(format!("graph:n{i}"))),
        1 => prop::sample::select(vec!["graph:", "graph:.x", "graph:a/b", "", "Component", "weights ", "manifest"])
            .prop_map(|s| Some(s.to_owned())),
        1 => Just(None),
    ]
}

fn part() -> impl Strategy<Value = Part> {
    (part_name(), any::<bool>(), content()).prop_map(|(name, filename, content)| Part {
        name,
        filename,
        content,
    })
}

/// A typical version (component or sha, maybe weights, config, tests), then perturbed by the
/// strategy's other parts; or parts entirely at random.
fn parts() -> impl Strategy<Value = Vec<Part>> {
    let typical = (
        prop_oneof![Just(Content::Component), Just(Content::KnownSha)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(part(), 0..3),
    )
        .prop_map(|(first, weights, config, tests, more)| {
            let name = match first {
                Content::KnownSha => "component_sha256",
                _ => "component",
            };
            let mut parts = vec![Part {
                name: Some(name.into()),
                filename: true,
                content: first,
            }];
            for (on, name, content) in [
                (weights, "weights", Content::Garbage(vec![1, 2, 3])),
                (config, "config", Content::Config),
                (tests, "tests", Content::Tests),
            ] {
                if on {
                    parts.push(Part {
                        name: Some(name.into()),
                        filename: true,
                        content,
                    });
                }
            }
            parts.extend(more);
            parts
        });
    prop_oneof![
        3 => typical,
        2 => prop::collection::vec(part(), 0..6),
        // A long text part, and one before a component.
        1 => (prop_oneof![Just(1024usize), Just(1025), Just(8 << 20)], any::<bool>()).prop_map(|(n, first)| {
            let long = Part { name: Some("component_sha256".into()), filename: false, content: Content::Long(n) };
            let component = Part { name: Some("component".into()), filename: true, content: Content::Component };
            if first { vec![long, component] } else { vec![long] }
        }),
        // More graphs than a version may have.
        1 => (17..19usize).prop_map(|n| {
            let mut parts = vec![Part { name: Some("component".into()), filename: true, content: Content::Component }];
            parts.extend((0..n).map(|i| Part { name: Some(format!("graph:g{i}")), filename: true, content: Content::Garbage(vec![0]) }));
            parts
        }),
    ]
}

/// How the body is framed.
#[derive(Debug, Clone)]
enum Framing {
    Good,
    Truncated(prop::sample::Index),
    NoClosingBoundary,
    OtherBoundary,
    NoBoundaryParameter,
    LineFeedsOnly,
    /// Not multipart: the body is taken as the raw component.
    Raw,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        12 => Just(Framing::Good),
        1 => any::<prop::sample::Index>().prop_map(Framing::Truncated),
        1 => Just(Framing::NoClosingBoundary),
        1 => Just(Framing::OtherBoundary),
        1 => Just(Framing::NoBoundaryParameter),
        1 => Just(Framing::LineFeedsOnly),
        1 => Just(Framing::Raw),
    ]
}

/// The path's model and version.
#[derive(Debug, Clone)]
enum Target {
    /// A fresh version of one of a few models.
    Fresh(u8),
    /// A version that exists.
    Existing,
    /// Names the registry refuses.
    BadModel(&'static str),
    BadVersion(&'static str),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        16 => (0..4u8).prop_map(Target::Fresh),
        1 => Just(Target::Existing),
        1 => prop::sample::select(vec![".hidden", "a%20b", "%2e%2e"]).prop_map(Target::BadModel),
        1 => prop::sample::select(vec![".v", "production", "aliases", "traffic"]).prop_map(Target::BadVersion),
    ]
}

/// The `ferry-sha256` header.
#[derive(Debug, Clone)]
enum ShaHeader {
    None,
    Right,
    Wrong,
}

fn sha_header() -> impl Strategy<Value = ShaHeader> {
    prop_oneof![8 => Just(ShaHeader::None), 1 => Just(ShaHeader::Right), 1 => Just(ShaHeader::Wrong)]
}

fn multipart_body(parts: &[Part], crlf: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}{crlf}").as_bytes());
        let mut disposition = "Content-Disposition: form-data".to_owned();
        if let Some(name) = &p.name {
            disposition += &format!("; name=\"{name}\"");
        }
        if p.filename {
            disposition += "; filename=\"part.bin\"";
        }
        body.extend_from_slice(format!("{disposition}{crlf}{crlf}").as_bytes());
        body.extend_from_slice(&p.content.bytes());
        body.extend_from_slice(crlf.as_bytes());
    }
    body.extend_from_slice(format!("--{BOUNDARY}--{crlf}").as_bytes());
    body
}

/// The answer the handler must give to well-framed `parts` for a fresh version.
fn expected(parts: &[Part], sha_header: &ShaHeader) -> StatusCode {
    let bad = StatusCode::BAD_REQUEST;
    let cap = MAX_UPLOAD as usize;
    let mut seen = BTreeSet::new();
    let mut graphs = BTreeSet::new();
    let (mut sent, mut sha, mut config, mut tests) = (None, None, None, None);
    for p in parts {
        let name = p.name.clone().unwrap_or_default();
        let bytes = p.content.bytes();
        if [
            "component",
            "component_sha256",
            "weights",
            "config",
            "tests",
        ]
        .contains(&name.as_str())
            && !seen.insert(name.clone())
        {
            return bad;
        }
        let too_large = bytes.len() > cap;
        match name.as_str() {
            "component_sha256" => {
                if bytes.len() > 1024 {
                    return bad;
                }
                sha = Some(String::from_utf8_lossy(&bytes).trim().to_ascii_lowercase());
            }
            "component" | "weights" | "config" | "tests" if too_large => {
                return StatusCode::PAYLOAD_TOO_LARGE
            }
            "component" => sent = Some(bytes),
            "weights" => {}
            "config" => config = Some(bytes),
            "tests" => tests = Some(bytes),
            graph if graph.starts_with("graph:") => {
                let g = &graph["graph:".len()..];
                if ferry::registry::check_graph_name(g).is_err()
                    || graphs.contains(g)
                    || graphs.len() >= 16
                {
                    return bad;
                }
                if too_large {
                    return StatusCode::PAYLOAD_TOO_LARGE;
                }
                graphs.insert(g.to_owned());
            }
            _ => return bad,
        }
    }
    let known = ferry::runtime::sha256_hex(&component());
    match (sent, sha) {
        (Some(c), None) => {
            let right = ferry::runtime::sha256_hex(&c);
            if matches!(sha_header, ShaHeader::Wrong)
                || (matches!(sha_header, ShaHeader::Right) && right != known)
            {
                return bad;
            }
            if c != component() {
                return bad;
            }
        }
        (None, Some(s)) if s == known => {}
        _ => return bad,
    }
    if let Some(c) = config {
        let ok = std::str::from_utf8(&c)
            .ok()
            .is_some_and(|t| serde_json::from_str::<serde_json::Value>(t).is_ok());
        if !ok {
            return bad;
        }
    }
    if let Some(t) = tests {
        let ok = std::str::from_utf8(&t)
            .ok()
            .is_some_and(|t| ferry::selftest::parse_tests_document(t, "tests").is_ok());
        if !ok {
            return bad;
        }
    }
    StatusCode::CREATED
}

fn upload_request(path: &str, content_type: &str, sha: &ShaHeader, body: Vec<u8>) -> Request<Body> {
    let mut r = Request::put(path).header("content-type", content_type);
    match sha {
        ShaHeader::None => {}
        ShaHeader::Right => r = r.header("ferry-sha256", ferry::runtime::sha256_hex(&component())),
        ShaHeader::Wrong => r = r.header("ferry-sha256", "00".repeat(32)),
    }
    r.body(chunked(body)).unwrap()
}

/// The body in 16 KiB chunks, each after a pause, and its end after one more, as hyper delivers a
/// body (the multipart parser takes in whatever is ready: a body ready all at once would be
/// buffered whole by it, hiding whether a handler gathers a part in memory). The pause before the
/// end matters: multer 3.1 answers "incomplete multipart stream" when, after waiting once, it gets
/// a whole body and its end in one go, which hyper does not do (a body's end comes on a poll of
/// its own; checked over a socket, with curl's `Expect: 100-continue` and a delayed body).
fn chunked(body: Vec<u8>) -> Body {
    use futures_util::StreamExt;
    let body = axum::body::Bytes::from(body);
    let chunks: Vec<_> = (0..body.len())
        .step_by(16 << 10)
        .map(|at| Some(body.slice(at..(at + (16 << 10)).min(body.len()))))
        .chain(std::iter::once(None))
        .collect();
    let stream = futures_util::stream::iter(chunks)
        .then(|chunk| async move {
            tokio::task::yield_now().await;
            chunk
        })
        .take_while(|chunk| std::future::ready(chunk.is_some()))
        .map(|chunk| Ok::<_, std::io::Error>(chunk.expect("taken while some")));
    Body::from_stream(stream)
}

fn uploads_left(app: &App) -> usize {
    std::fs::read_dir(app.dir.path().join("cache/uploads")).map_or(0, |d| d.count())
}

#[test]
fn multipart_upload() {
    let app = App::new();
    // The store has the component's blob (for `component_sha256`) and a version `fz-x/1`.
    let seeded = app.send(upload_request(
        "/v1/models/fz-x/versions/1",
        "application/wasm",
        &ShaHeader::None,
        component(),
    ));
    assert_eq!(seeded.status, StatusCode::CREATED, "{:?}", seeded.error());
    let next = Mutex::new(0u64);
    let tally = crate::Tally::default();
    let strategy = (target(), parts(), framing(), sha_header());
    crate::run(
        "multipart_upload",
        2_000,
        strategy,
        |(target, parts, framing, sha)| {
            let path = match &target {
                Target::Fresh(m) => {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    format!("/v1/models/fz-{m}/versions/v{n}")
                }
                Target::Existing => "/v1/models/fz-x/versions/1".to_owned(),
                Target::BadModel(m) => format!("/v1/models/{m}/versions/1"),
                Target::BadVersion(v) => format!("/v1/models/fz-x/versions/{v}"),
            };
            let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
            let (content_type, body) = match &framing {
                Framing::Good => (multipart, multipart_body(&parts, "\r\n")),
                Framing::Truncated(i) => {
                    let mut b = multipart_body(&parts, "\r\n");
                    b.truncate(i.index(b.len()));
                    (multipart, b)
                }
                Framing::NoClosingBoundary => {
                    let mut b = multipart_body(&parts, "\r\n");
                    b.truncate(b.len() - BOUNDARY.len() - 6);
                    (multipart, b)
                }
                Framing::OtherBoundary => (
                    "multipart/form-data; boundary=another".to_owned(),
                    multipart_body(&parts, "\r\n"),
                ),
                Framing::NoBoundaryParameter => (
                    "multipart/form-data".to_owned(),
                    multipart_body(&parts, "\r\n"),
                ),
                Framing::LineFeedsOnly => (multipart, multipart_body(&parts, "\n")),
                Framing::Raw => (
                    "application/wasm".to_owned(),
                    parts.first().map_or(vec![], |p| p.content.bytes()),
                ),
            };
            let len = body.len();
            let request = upload_request(&path, &content_type, &sha, body);
            let (answer, usage) = measure(|| app.send(request));
            let status = answer.status;
            tally.note(format!("answered {}", status.as_u16()));
            prop_assert!(
                answer.error().is_some() || status == StatusCode::CREATED,
                "status {status} without an error message"
            );
            let want = match (&target, &framing) {
                (Target::BadModel(_) | Target::BadVersion(_), _) => Some(StatusCode::BAD_REQUEST),
                (Target::Existing, _) => Some(StatusCode::CONFLICT),
                (Target::Fresh(_), Framing::Good) => Some(expected(&parts, &sha)),
                (Target::Fresh(_), Framing::Raw) => {
                    Some(match parts.first().map(|p| p.content.bytes()) {
                        Some(b) if b.len() > MAX_UPLOAD as usize => StatusCode::PAYLOAD_TOO_LARGE,
                        Some(b) if b == component() && !matches!(sha, ShaHeader::Wrong) => {
                            StatusCode::CREATED
                        }
                        _ => StatusCode::BAD_REQUEST,
                    })
                }
                (Target::Fresh(_), _) => None,
            };
            match want {
                Some(want) => prop_assert_eq!(status, want, "{:?}", answer.error()),
                None => prop_assert!(
                    [
                        StatusCode::CREATED,
                        StatusCode::BAD_REQUEST,
                        StatusCode::PAYLOAD_TOO_LARGE
                    ]
                    .contains(&status),
                    "broken framing answered {status}: {:?}",
                    answer.error()
                ),
            }
            prop_assert_eq!(uploads_left(&app), 0, "an upload was left behind");
            // Parts stream to disk: what is held is small buffers and, while the next part is looked
            // for, at most the 2 MiB the handler lets the multipart parser gather (grown by doubling),
            // never a part or a whole body gathered in memory.
            prop_assert!(
                usage.largest <= (4 << 20) + (512 << 10),
                "a {len}-byte upload made one allocation of {} bytes",
                usage.largest
            );
            Ok::<(), TestCaseError>(())
        },
    );
    tally.report("multipart_upload");
}

mod regressions {
    use super::*;

    fn request(version: &str, parts: &[Part]) -> Request<Body> {
        upload_request(
            &format!("/v1/models/fz-r/versions/{version}"),
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &ShaHeader::None,
            multipart_body(parts, "\r\n"),
        )
    }

    fn put(app: &App, version: &str, parts: &[Part]) -> crate::app::Answer {
        app.send(request(version, parts))
    }

    fn part(name: &str, content: Content) -> Part {
        Part {
            name: Some(name.into()),
            filename: true,
            content,
        }
    }

    #[test]
    fn a_part_sent_twice_is_refused() {
        // Caught by `multipart_upload`: the second `weights` silently replaced the first, whose blob
        // was still written to the store.
        let app = App::new();
        let a = put(
            &app,
            "1",
            &[
                part("component", Content::Component),
                part("weights", Content::Garbage(vec![1])),
                part("weights", Content::Garbage(vec![2])),
            ],
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.error().unwrap().contains("`weights` is sent twice"),
            "{:?}",
            a.error()
        );
        let a = put(
            &app,
            "1",
            &[
                part("component", Content::Component),
                part("component", Content::Component),
            ],
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.error());
        assert_eq!(uploads_left(&app), 0);
    }

    #[test]
    fn a_body_whose_boundary_never_comes_is_cut_off() {
        // Caught by `multipart_upload`: with a boundary other than the one Content-Type names (or
        // part headers that never end) the multipart parser gathered the whole body in memory,
        // on routes with no body limit.
        let app = App::new();
        for (content_type, body) in [
            (
                "multipart/form-data; boundary=another".to_owned(),
                multipart_body(&[part("component", Content::Long(8 << 20))], "\r\n"),
            ),
            (
                format!("multipart/form-data; boundary={BOUNDARY}"),
                [
                    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"")
                        .into_bytes(),
                    vec![b'a'; 8 << 20],
                ]
                .concat(),
            ),
        ] {
            let request = upload_request(
                "/v1/models/fz-r/versions/1",
                &content_type,
                &ShaHeader::None,
                body,
            );
            let (a, usage) = measure(|| app.send(request));
            assert_eq!(a.status, StatusCode::BAD_REQUEST);
            assert!(
                a.error().unwrap().contains("before a part"),
                "{:?}",
                a.error()
            );
            assert!(usage.largest <= 5 << 20, "{usage:?}");
        }
        // Parts larger than that still stream through.
        let app = App::with_upload_cap(16 << 20);
        let a = put(
            &app,
            "1",
            &[
                part("component", Content::Component),
                part("weights", Content::Long(6 << 20)),
            ],
        );
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.error());
    }

    #[test]
    fn a_long_component_sha256_part_is_refused_without_being_held() {
        // Caught by `multipart_upload`: `component_sha256` was read whole into memory, on routes
        // with no body limit.
        let app = App::new();
        let long = request("1", &[part("component_sha256", Content::Long(8 << 20))]);
        let (a, usage) = measure(|| app.send(long));
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.error().unwrap().contains("longer than 1024 bytes"),
            "{:?}",
            a.error()
        );
        assert!(usage.largest < 1 << 20, "{usage:?}");
        // A sha256 as clients send it still works.
        let seeded = put(&app, "1", &[part("component", Content::Component)]);
        assert_eq!(seeded.status, StatusCode::CREATED, "{:?}", seeded.error());
        let a = put(&app, "2", &[part("component_sha256", Content::KnownSha)]);
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.error());
    }
}
