//! Which browser origins may call Herald, over HTTP (CORS) and websocket.

use herald::cors::AllowedOrigins;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{Backend, TestApp};

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.graphql_url())
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight")
}

fn allowed_origin(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn ws_status(app: &TestApp, origin: &str) -> u16 {
    let url = format!("{}/graphql/ws", app.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    headers.insert("Origin", origin.parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn development_allows_localhost_origins_only() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let ok = preflight(&app, "http://localhost:5173").await;
    assert_eq!(
        allowed_origin(&ok).as_deref(),
        Some("http://localhost:5173")
    );
    let evil = preflight(&app, "https://evil.example").await;
    assert_eq!(allowed_origin(&evil), None);
    assert_eq!(ws_status(&app, "http://localhost:5173").await, 101);
    assert_eq!(ws_status(&app, "https://evil.example").await, 403);
}

#[tokio::test]
async fn a_configured_list_is_matched_exactly() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        if let Some(http) = c.http.as_mut() {
            http.cors = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        }
    })
    .await
    .expect("sqlite");
    let ok = preflight(&app, "https://app.example.com").await;
    assert_eq!(
        allowed_origin(&ok).as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        allowed_origin(&preflight(&app, "http://localhost:5173").await),
        None
    );
    assert_eq!(ws_status(&app, "https://app.example.com").await, 101);
    assert_eq!(ws_status(&app, "http://localhost:5173").await, 403);
    // Herald's own pages (GraphiQL) may always open a websocket.
    assert_eq!(ws_status(&app, &app.url).await, 101);
}
