//! The client's address, for per-address rate limits.

use axum::http::HeaderMap;

use crate::graphql::ClientIp;

/// The client's address: the peer's, or when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not one.
pub(super) fn client_ip(
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
    trusted: &[std::net::IpAddr],
) -> ClientIp {
    let peer = peer.ip();
    if !trusted.contains(&peer) {
        return ClientIp(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok())
        .collect::<Vec<_>>();
    ClientIp(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        let proxy: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(&h, peer, &[]).0,
            proxy,
            "untrusted peer: its own address"
        );
        assert_eq!(client_ip(&h, peer, &[proxy]).0.to_string(), "1.2.3.4");
        assert_eq!(client_ip(&HeaderMap::new(), peer, &[proxy]).0, proxy);
    }
}
