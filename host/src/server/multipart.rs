//! Reading a `multipart/form-data` upload without trusting its framing. The management routes have
//! no body limit (a part may be gigabytes, and streams to disk), so what the parser would otherwise
//! gather in memory is bounded here: the bytes between parts and short text parts. A part name sent
//! twice is refused rather than silently replacing the first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request};
use futures_util::StreamExt;

use super::error::ApiError;

/// Bytes a multipart body may deliver while the next part is looked for: a preamble, a boundary, the
/// part's headers, and whatever the connection had ready beside them. The parser holds these in
/// memory until it finds what it looks for, so a body whose boundary is not the one its Content-Type
/// names, or whose part headers never end, must be stopped. Part data streams past this count.
const MAX_BETWEEN_PARTS: usize = 2 << 20;

/// Longest text part (`component_sha256`: 64 hex digits, with room for whitespace).
const MAX_TEXT_PART: usize = 1024;

/// The parts of one upload, in the order sent.
pub struct Form {
    parts: Multipart,
    between: Arc<Between>,
    seen: Vec<String>,
}

/// What the body delivered while the form waited for its next part.
#[derive(Default)]
struct Between {
    looking: AtomicBool,
    bytes: AtomicUsize,
    exceeded: AtomicBool,
}

impl Form {
    pub async fn from_request(request: Request) -> Result<Self, ApiError> {
        let between = Arc::new(Between::default());
        let (head, body) = request.into_parts();
        let request = Request::from_parts(head, counted(body, between.clone()));
        let parts = Multipart::from_request(request, &())
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        Ok(Self {
            parts,
            between,
            seen: Vec::new(),
        })
    }

    /// The next part, or none after the last; a part whose name was already sent is an error.
    pub async fn next_part(&mut self) -> Result<Option<Field<'_>>, ApiError> {
        self.between.bytes.store(0, Ordering::Relaxed);
        self.between.looking.store(true, Ordering::Relaxed);
        let next = self.parts.next_field().await;
        self.between.looking.store(false, Ordering::Relaxed);
        let field = match next {
            Ok(Some(field)) => field,
            Ok(None) => return Ok(None),
            Err(_) if self.between.exceeded.load(Ordering::Relaxed) => {
                return Err(ApiError::bad_request(format!(
                    "malformed multipart body: more than {MAX_BETWEEN_PARTS} bytes before a part (its boundary is not the one Content-Type names, or its headers do not end)"
                )));
            }
            Err(e) => return Err(malformed(e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        // A part sent twice would silently replace the first (and leave its upload behind).
        if self.seen.contains(&name) {
            return Err(ApiError::bad_request(format!(
                "part `{name}` is sent twice"
            )));
        }
        self.seen.push(name);
        Ok(Some(field))
    }
}

/// `body`, counted while a part is looked for, and cut off past [`MAX_BETWEEN_PARTS`].
fn counted(body: Body, between: Arc<Between>) -> Body {
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if between.looking.load(Ordering::Relaxed) {
            let bytes = between.bytes.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            if bytes > MAX_BETWEEN_PARTS {
                between.exceeded.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("multipart framing too long"));
            }
        }
        Ok(chunk)
    }))
}

/// A short text part, read without holding more than [`MAX_TEXT_PART`] bytes of it.
pub async fn short_text(mut field: Field<'_>, what: &str) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if text.len() + chunk.len() > MAX_TEXT_PART {
            return Err(ApiError::bad_request(format!(
                "part `{what}` is longer than {MAX_TEXT_PART} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    // As `Field::text` decodes UTF-8: lossy, a byte order mark dropped (a sha256 is ASCII, so the
    // part's `charset`, which `Field::text` would follow, is not looked at).
    let text = String::from_utf8_lossy(&text);
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned())
}

fn malformed(e: MultipartError) -> ApiError {
    ApiError::new(
        e.status(),
        format!("malformed multipart body: {}", e.body_text()),
    )
}
