//! `GET /console`: the operator console (`protocol.md` section 9), a web page served by the API
//! port: search a uid, its devices online now, a timeline of its sessions, its history and
//! events, kicks, system uids, and the whole system's counters.
//!
//! Owns the page's static files (`console/`), embedded in the binary at build time, and the
//! routes that serve them. Promises: the files hold no data and need no token, so they are
//! served to anyone ([`is_public`] tells the token guard which paths they are); everything the
//! page shows it asks of the API with the manager token the operator typed, through the same
//! routes any client uses. The page works offline: nothing is loaded from another origin, and
//! the security policy sent with it forbids that. Must never: answer data of its own, serve a
//! path outside its fixed list, or embed the manager token.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file and the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page and its files. The page sits at `/console` and names its files relative to itself
/// (`console/app.js`), and the scripts name the API relative to the page (`user/sessions`), so
/// the console also works behind a proxy that mounts the API under a prefix.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/console",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("console/index.html"),
    },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("console/console.css"),
    },
    Asset {
        path: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/app.js"),
    },
    Asset {
        path: "/console/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/api.js"),
    },
    Asset {
        path: "/console/format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/format.js"),
    },
    Asset {
        path: "/console/timeline.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/timeline.js"),
    },
    Asset {
        path: "/console/user.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/user.js"),
    },
    Asset {
        path: "/console/system.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/system.js"),
    },
];

/// Same-origin only: the page's own scripts and styles, calls to its own API, nothing inline,
/// no frames (a framing page could trick an operator into a kick).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the console's files, which the token guard lets through: they hold
/// no data, and the page must load before the operator can type the token.
pub fn is_public(path: &str) -> bool {
    path == WITH_SLASH || ASSETS.iter().any(|asset| asset.path == path)
}

/// `/console/`, typed by habit: sent on to the page.
const WITH_SLASH: &str = "/console/";

/// The console's routes, one per file (HEAD answered as GET by axum), and `/console/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let files = ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    });
    // Relative, so that a proxy's prefix is kept.
    files.route(
        WITH_SLASH,
        get(|| async { Redirect::permanent("../console") }),
    )
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // A new binary may bring new files: the browser asks again every time (they are
            // small, and an operator's page load is rare).
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served_and_nothing_comes_from_elsewhere() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            let name = asset.path.trim_start_matches('/');
            let named_by_page = page.contains(&format!("\"{name}\""));
            let imported = ASSETS.iter().any(|a| {
                std::str::from_utf8(a.body)
                    .unwrap()
                    .contains(&format!("'./{}'", name.trim_start_matches("console/")))
            });
            assert!(
                named_by_page || imported,
                "{} is served but nothing loads it",
                asset.path
            );
        }
        for asset in ASSETS {
            // The SVG namespace is a name, not an address anything is fetched from.
            let text = std::str::from_utf8(asset.body)
                .unwrap()
                .replace("'http://www.w3.org/2000/svg'", "");
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !text.contains(scheme),
                    "{} names {scheme}: the console must work offline",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn only_the_listed_files_are_public() {
        assert!(is_public("/console"));
        assert!(is_public("/console/app.js"));
        assert!(is_public("/console/"));
        assert!(!is_public("/console//"));
        assert!(!is_public("/console/nope.js"));
        assert!(!is_public("/user/sessions"));
        assert!(!is_public("/console/../stats"));
    }
}
