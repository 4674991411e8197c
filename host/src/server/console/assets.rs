//! The console's files, built into the binary. The page loads only these (its Content-Security-Policy
//! allows nothing else: no inline script, no other origin), and the script writes data into the page
//! as text, never as markup.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::extract::State;

use crate::server::{ApiError, AppState};

/// A file: its name under `/ui/`, its media type, its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    media_type: "text/html; charset=utf-8",
    bytes: include_bytes!("assets/index.html"),
};

const FILES: [Asset; 3] = [
    INDEX,
    Asset {
        name: "console.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        name: "console.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
];

const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'";

/// `GET /ui`: the console.
#[utoipa::path(get, path = "/ui", tag = "open",
    responses((status = 200, description = "The operator console (HTML); it reads the management routes with the token it is given", content_type = "text/html")))]
pub async fn page(State(state): State<AppState>) -> Response {
    index(&state)
}

fn index(state: &AppState) -> Response {
    // Whether the page asks for a token before it reads anything (so it never shows a refusal as
    // its first sight).
    let required = if state.teams.required() {
        "true"
    } else {
        "false"
    };
    let text = std::str::from_utf8(INDEX.bytes).expect("the page is UTF-8");
    let mut response = serve(&INDEX);
    *response.body_mut() = text.replace("{{token_required}}", required).into();
    response
}

/// `GET /ui/{file}`: the console's script and style.
#[utoipa::path(get, path = "/ui/{file}", tag = "open",
    params(("file" = String, Path, description = "index.html, console.js or console.css")),
    responses((status = 200, description = "The file", content_type = "text/plain"),
        (status = 404, description = "No such file", body = crate::server::openapi::ErrorBody)))]
pub async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    if file == INDEX.name {
        return index(&state);
    }
    match FILES.iter().find(|a| a.name == file) {
        Some(a) => serve(a),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "the console has index.html, console.js and console.css",
        )
        .into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.media_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Built into this binary: a new host may bring new files.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.bytes,
    )
        .into_response()
}
