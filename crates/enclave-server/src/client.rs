//! The client address a request is charged to (the failed-credential
//! buckets): the TCP peer, or — when the peer is one of the configured
//! trusted proxies — the address the proxies recorded in
//! `X-Forwarded-For`. Without trusted proxies the header is ignored, so a
//! client cannot move itself to another bucket by sending it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::AppState;

/// The networks whose connections are proxies that append the address
/// they received a request from to `X-Forwarded-For`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// CIDR networks or single addresses (`10.0.0.0/8`, `192.0.2.7`, `::1`).
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        list.iter()
            .map(|s| {
                let s = s.as_ref().trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is neither an address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// A list of networks, or one comma-separated string of them (as an
/// environment variable gives it).
impl<'de> serde::Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum List {
            One(String),
            Many(Vec<String>),
        }
        let list = match List::deserialize(d)? {
            List::One(s) => s
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .collect(),
            List::Many(v) => v,
        };
        Self::parse(&list).map_err(|e| serde::de::Error::custom(format!("trusted_proxies: {e}")))
    }
}

/// The address a request is charged to (set by [`resolve_client`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// One `X-Forwarded-For` hop: an address, optionally with a port.
fn hop_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client behind `peer`: when `peer` is trusted, the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy (hops left of it
/// were written by the client and prove nothing). A hop that is no address
/// leaves the request charged to `peer`.
pub fn client_of(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        hops.extend(value.split(',').filter(|h| !h.trim().is_empty()));
    }
    let mut client = None;
    for hop in hops.iter().rev() {
        let Some(ip) = hop_ip(hop) else {
            return peer;
        };
        client = Some(ip);
        if !trusted.contains(ip) {
            break;
        }
    }
    client.map_or(peer, |ip| SocketAddr::new(ip, 0))
}

/// Middleware: records the request's [`ClientAddr`].
pub async fn resolve_client(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = client_of(peer, req.headers(), &state.options().trusted_proxies);
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let lb = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        let spoof = headers(&["203.0.113.9"]);
        // No trusted proxies, or a peer that is not one: the header is noise.
        assert_eq!(
            client_of(peer("10.1.2.3:5"), &spoof, &none),
            peer("10.1.2.3:5")
        );
        assert_eq!(
            client_of(peer("198.51.100.1:5"), &spoof, &lb),
            peer("198.51.100.1:5")
        );
        // Behind the proxy: the hop it appended.
        assert_eq!(
            client_of(peer("10.1.2.3:5"), &spoof, &lb).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_of(peer("[::1]:5"), &spoof, &lb).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_client_cannot_choose_its_address_by_prepending_hops() {
        let lb = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let p = peer("10.0.0.1:1");
        // The client sent "1.1.1.1, 10.9.9.9"; two proxies appended the
        // client's real address and the first proxy's.
        let h = headers(&["1.1.1.1, 10.9.9.9", "198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            client_of(p, &h, &lb).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Ports and brackets are addresses too; garbage is not.
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            client_of(p, &h, &lb).ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_of(p, &headers(&["198.51.100.7:80"]), &lb).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_of(p, &headers(&["1.1.1.1, not-an-ip"]), &lb), p);
        // Only proxies in the chain (or no header): the left-most / the peer.
        assert_eq!(
            client_of(p, &headers(&["10.0.0.3, 10.0.0.2"]), &lb).ip(),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_of(p, &HeaderMap::new(), &lb), p);
    }

    #[test]
    fn bad_proxy_lists_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal"]).is_err());
        assert!(TrustedProxies::parse(&["192.0.2.7", "2001:db8::/32"]).is_ok());
    }
}
