//! The console's files over HTTP (`protocol.md` section 9): `GET /console` and the files it
//! loads are served without the manager token and hold no data; everything else still needs
//! the token. What the page does with them is tested in a real browser (`console_browser`).

use reqwest::Method;

use crate::helpers::*;

const MANAGER: &str = "console-files-m4nager";

/// The `src` and `href` values of the page, in order.
fn linked_files(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = page;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').expect("a closed attribute");
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// The 401 envelope (its words are the auth module's to choose).
fn assert_unauthorized(answer: &Answer, path: &str) {
    assert_eq!(answer.status, 401, "{path}: {:?}", answer.body);
    assert_eq!(answer.body["status"], 401, "{path}: {:?}", answer.body);
    assert!(answer.body["msg"].is_string(), "{path}: {:?}", answer.body);
}

#[tokio::test]
async fn the_console_is_served_without_the_token_and_the_api_still_needs_it() {
    let app = spawn_app_with(&["--manager-token", MANAGER]).await;

    let page = app.request(Method::GET, "/console", None, &[]).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = page.body.as_str().expect("the page is text, not JSON");
    assert!(html.contains("<title>wkuser console</title>"), "{html}");
    assert!(!html.contains(MANAGER), "the page never carries the token");

    // Every file the page links to is served, without the token, by path under /console/.
    let files: Vec<String> = linked_files(html)
        .into_iter()
        .filter(|f| !f.starts_with('#'))
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".css")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(".js")), "{files:?}");
    for file in &files {
        assert!(
            file.starts_with("console/"),
            "{file}: the page loads only its own files, relative to itself"
        );
        let answer = app
            .request(Method::GET, &format!("/{file}"), None, &[])
            .await;
        assert_eq!(answer.status, 200, "{file}: {:?}", answer.body);
        let expected = if file.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(answer.content_type.as_deref(), Some(expected), "{file}");
    }
    // The modules the entry script imports are served too.
    for module in ["api", "format", "timeline", "user", "system"] {
        let answer = app
            .request(Method::GET, &format!("/console/{module}.js"), None, &[])
            .await;
        assert_eq!(answer.status, 200, "{module}.js");
    }

    // The data is not public: the API answers 401 without the token, 200 with it.
    for path in [
        "/stats",
        "/user/sessions?uid=u1",
        "/events",
        "/cluster/nodes",
    ] {
        let refused = app.request(Method::GET, path, None, &[]).await;
        assert_unauthorized(&refused, path);
        let admitted = app
            .request(Method::GET, path, None, &[("token", MANAGER)])
            .await;
        assert_eq!(admitted.status, 200, "{path}: {:?}", admitted.body);
    }
    // Only the listed files are public: any other path under /console/ is guarded like the
    // rest of the API, and 404 with the token.
    let unknown = app
        .request(Method::GET, "/console/secrets.json", None, &[])
        .await;
    assert_unauthorized(&unknown, "/console/secrets.json");
    let unknown = app
        .request(
            Method::GET,
            "/console/secrets.json",
            None,
            &[("token", MANAGER)],
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn the_console_says_what_the_browser_may_load_and_answers_other_methods_with_405() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(app.url("/console"))
        .send()
        .await
        .expect("request sent");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let policy = header("content-security-policy").expect("a security policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));

    // `/console/` sends the browser on to the page, relative to where it is.
    let slash = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/console/"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(slash.status().as_u16(), 308);
    assert_eq!(slash.headers()["location"], "../console");

    let head = app.request(Method::HEAD, "/console", None, &[]).await;
    assert_eq!(head.status, 200);
    let post = app
        .request(Method::POST, "/console", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(post.pair(), (405, envelope(405, "method not allowed")));
}
