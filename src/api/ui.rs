//! The dashboard at `/ui/`: a page, a script, a style sheet and an icon compiled into the
//! binary, nothing loaded from elsewhere, so it works offline. Everything it shows comes from
//! the API's JSON and the `/live` stream, and is put on the page as text (`textContent`),
//! never as markup. Every answer carries a strict Content-Security-Policy: no inline script
//! or style, nothing from another origin, no framing.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::ApiError;

/// Nothing but this origin, no inline code, no plugins, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The dashboard's files: name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("ui/app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("ui/icon.svg")),
];

fn serve(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change only with the binary; a reload after an upgrade fetches them again.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /ui`: to the page, whose relative links need the slash.
pub(super) async fn to_index() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub(super) async fn index() -> Response {
    file(Path("index.html".to_string())).await
}

/// `GET /ui/{file}`: one of the dashboard's files.
pub(super) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => ApiError::NotFound.into_response(),
    }
}

/// The dashboard's size in bytes, all files together.
pub fn total_bytes() -> usize {
    FILES.iter().map(|(_, _, b)| b.len()).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_whole_dashboard_is_under_300_kilobytes() {
        assert!(
            super::total_bytes() < 300 * 1024,
            "{}",
            super::total_bytes()
        );
    }
}
