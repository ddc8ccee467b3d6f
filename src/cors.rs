//! Which browser origins may call Herald: CORS on HTTP, and the same list
//! for the websocket upgrade's `Origin` (browsers do not apply CORS there).
//!
//! `HERALD_CORS_ORIGINS` lists origins exactly (`https://app.example.com`);
//! unset, development allows any origin on localhost and production none.

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port.
    Localhost,
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            Self::Localhost => url::Url::parse(origin).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
            }),
        }
    }

    pub fn layer(&self) -> CorsLayer {
        let allowed = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| allowed.allows(o))
            }))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::ACCEPT,
                header::IF_NONE_MATCH,
            ])
            // A cached GET's validator, for clients that revalidate by hand.
            .expose_headers([header::ETAG])
            .max_age(std::time::Duration::from_secs(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_means_loopback_on_any_port_only() {
        let l = AllowedOrigins::Localhost;
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1:8000",
            "https://localhost",
            "http://[::1]:3000",
        ] {
            assert!(l.allows(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "null",
            "file://localhost",
        ] {
            assert!(!l.allows(bad), "{bad}");
        }
    }

    #[test]
    fn a_list_matches_exactly() {
        let l = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        assert!(l.allows("https://app.example.com"));
        assert!(!l.allows("https://app.example.com.evil"));
        assert!(!l.allows("http://localhost:5173"));
        assert!(!AllowedOrigins::List(Vec::new()).allows("http://localhost"));
    }
}
