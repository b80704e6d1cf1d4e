//! Endpoints no participant may have: the coordinator's own address, and,
//! with `--participant-allow`, any host the allow-list does not name.
//!
//! ## The coordinator's own address
//!
//! A step that calls the coordinator could cancel its own saga or act with the
//! coordinator's rights; `Endpoint::parse` already refuses the Coordinator
//! service on any host, [`own_address`] refuses any method on the
//! coordinator's own listener.
//!
//! An endpoint is the coordinator's own when its port is the listener's and
//! its host is the listener's IP, a loopback address, an unspecified one
//! (`0.0.0.0` connects to the local host), or `localhost`. Host names other
//! than `localhost` are not resolved for this check; other addresses of this
//! host, when it listens on all of them, are not known either: say which hosts
//! participants may be on with the allow-list.
//!
//! ## The allow-list
//!
//! Whoever may register participants decides where the coordinator sends
//! requests, from inside the network it runs in: a stolen admin token would
//! otherwise point a step at `http://169.254.169.254/…` (a cloud's metadata
//! service) or any internal service. [`AllowList`] says which hosts
//! participants may be on; without one, every host is allowed (as before).
//!
//! Entries ([`AllowEntry`]): an IP address (`10.0.0.7`, `::1`), a network in
//! CIDR form (`10.0.0.0/8`, `fd00::/8`), a host name (`payments.internal`,
//! matched whole and case-insensitively), or `*.suffix` (`*.svc.cluster.local`:
//! any name under `svc.cluster.local`, not that name itself).
//!
//! An endpoint's host is checked so:
//!
//! ```text
//!   IP literal ─────────────────────────► in a network entry?        yes: allowed
//!   name ──► matched by a name entry? ──► yes: allowed (its DNS is trusted)
//!                     │ no
//!                     └─► resolved: every address in a network entry? yes: allowed
//! ```
//!
//! The check is made twice, because DNS can change between the two:
//! - **at registration** ([`admit`]), so a refused endpoint is never stored
//!   (RegisterParticipant answers `INVALID_ARGUMENT`, naming the host);
//! - **at every new connection** ([`dial`]), on the addresses actually
//!   connected to: a name that resolved to an allowed address at registration
//!   and to `169.254.169.254` later (DNS rebinding) is refused then, and so are
//!   endpoints that entered before the allow-list did (participants registered,
//!   sagas started, before a restart that set it). The connection is made to
//!   the very addresses that were checked, never to a second resolution.
//!
//! Invariants:
//! - An [`AllowList`] is never empty: "no list" is `None`, and means every
//!   host; an empty list would allow none, which is refused at start instead.
//! - An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) is checked as the
//!   IPv4 address it connects to.
//! - A name that a name entry matches is connected to at whatever it resolves
//!   to: naming it is vouching for its DNS. A name matched by no name entry is
//!   allowed only through its addresses, all of them.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;

use crate::saga::Endpoint;

/// The setting's flag, as refusals name it.
pub const ALLOW_FLAG: &str = "--participant-allow";
/// How long a registration or a connection waits for DNS to resolve a name it
/// checks; past that, the name is refused (a registration) or not connected to.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest DNS name an entry may be (RFC 1035).
const NAME_MAX_LEN: usize = 253;

/// Why `endpoint` is the coordinator's own listener `own`, if it is.
pub fn own_address(endpoint: &Endpoint, own: SocketAddr) -> Option<String> {
    let (host, port) = endpoint.host_port();
    if port != own.port() {
        return None;
    }
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip == own.ip() || ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    local.then(|| {
        format!(
            "{} is this coordinator's own address ({own}): a step must not call the coordinator",
            endpoint.origin()
        )
    })
}

/// One entry of `--participant-allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    /// An address (a /32 or /128 network) or a network: matches IP-literal
    /// hosts, and the addresses of names no name entry matches.
    Net(IpNet),
    /// A host name, lower case, without a trailing dot: matches that name.
    Name(String),
    /// `*.suffix`, kept as the suffix (lower case, no `*.`): matches every
    /// name that ends in `.suffix`.
    Suffix(String),
}

impl FromStr for AllowEntry {
    type Err = String;

    /// Parses one entry; the error says what is wrong with it, and the caller
    /// adds where it came from.
    fn from_str(text: &str) -> Result<Self, String> {
        let entry = text.trim();
        if entry.is_empty() {
            return Err("an empty entry (give an IP, a CIDR, a host name or *.suffix)".into());
        }
        if entry.contains("://") {
            return Err(format!(
                "'{entry}' is a URL: give only its host (an IP, a CIDR, a host name or *.suffix)"
            ));
        }
        if entry.contains('/') {
            let net: IpNet = entry
                .parse()
                .map_err(|_| format!("'{entry}' is not a CIDR like 10.0.0.0/8 or fd00::/8"))?;
            if net.trunc() != net {
                return Err(format!(
                    "'{entry}' has bits set past its prefix: did you mean {}?",
                    net.trunc()
                ));
            }
            return Ok(AllowEntry::Net(net));
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(AllowEntry::Net(IpNet::from(ip.to_canonical())));
        }
        if let Some(suffix) = entry.strip_prefix("*.") {
            return dns_name(suffix)
                .map(AllowEntry::Suffix)
                .map_err(|why| format!("'{entry}': {why}"));
        }
        dns_name(entry)
            .map(AllowEntry::Name)
            .map_err(|why| format!("'{entry}': {why}"))
    }
}

/// `text` as a DNS name, lower case and without a trailing dot, or why it is
/// not one (a port, a wildcard anywhere but the front, a bad character).
fn dns_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.contains(':') {
        return Err("an entry is a host, without a port".into());
    }
    if name.contains('*') {
        return Err("a wildcard is only allowed as a first label, *.suffix".into());
    }
    if name.is_empty() || name.len() > NAME_MAX_LEN {
        return Err(format!("not a host name (1 to {NAME_MAX_LEN} characters)"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    if !name.split('.').all(label_ok) {
        return Err("not a host name: labels of letters, digits, '-' or '_', split by '.'".into());
    }
    // A last label of digits only is an address gone wrong (`10.0.0`,
    // `10.0.0.256`), never a name anyone could register.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("neither an IP address nor a host name".into());
    }
    Ok(name)
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            AllowEntry::Net(net) => write!(f, "{net}"),
            AllowEntry::Name(name) => f.write_str(name),
            AllowEntry::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The hosts participant endpoints may name (`--participant-allow`); never
/// empty. Cheap to clone: every connection to a participant holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    entries: Arc<[AllowEntry]>,
}

/// What an allow-list says of a host before any DNS.
#[derive(Debug, PartialEq, Eq)]
pub enum HostCheck {
    Allowed,
    /// Refused, and why (naming the host and the flag).
    Refused(String),
    /// A name no name entry matches, with network entries to try: allowed
    /// only if every address it resolves to is in one of them.
    Resolve,
}

impl AllowList {
    /// The list of `entries`; `None` when there are none (an empty list
    /// would allow no host: see the module docs).
    pub fn new(entries: Vec<AllowEntry>) -> Option<Self> {
        (!entries.is_empty()).then(|| Self {
            entries: entries.into(),
        })
    }

    /// Parses `texts`, each one entry. The error names the first bad entry
    /// (the caller adds where it came from); no entries at all is an error.
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let entries = texts
            .into_iter()
            .map(AllowEntry::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(entries).ok_or_else(|| {
            "an empty list would allow no participant host; leave the setting out to allow every host"
                .to_string()
        })
    }

    /// The entries, in the order given.
    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    fn has_networks(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, AllowEntry::Net(_)))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .any(|e| matches!(e, AllowEntry::Net(net) if net.contains(&ip)))
    }

    /// What the list says of `host` (an endpoint's host, IPv6 without
    /// brackets) on its own.
    pub fn host(&self, host: &str) -> HostCheck {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if self.contains(ip) {
                HostCheck::Allowed
            } else {
                HostCheck::Refused(format!("host {host} is not in {ALLOW_FLAG}"))
            };
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let named = self.entries.iter().any(|e| match e {
            AllowEntry::Name(allowed) => *allowed == name,
            AllowEntry::Suffix(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            AllowEntry::Net(_) => false,
        });
        if named {
            HostCheck::Allowed
        } else if self.has_networks() {
            HostCheck::Resolve
        } else {
            HostCheck::Refused(format!("host {host} is not in {ALLOW_FLAG}"))
        }
    }

    /// Whether every address `host` resolved to is in a network entry (what
    /// [`HostCheck::Resolve`] asks); the refusal names the first one outside.
    pub fn addresses(&self, host: &str, resolved: &[IpAddr]) -> Result<(), String> {
        if resolved.is_empty() {
            return Err(format!(
                "host {host} resolves to no address, so it cannot be checked against {ALLOW_FLAG}"
            ));
        }
        match resolved.iter().find(|ip| !self.contains(**ip)) {
            Some(outside) => Err(format!(
                "host {host} resolves to {outside}, which is not in {ALLOW_FLAG}"
            )),
            None => Ok(()),
        }
    }
}

/// The registration-time check: `Ok` when `endpoint`'s host is allowed,
/// resolving it only when [`AllowList::host`] says so (a name allowed by
/// name need not resolve yet).
pub async fn admit(allow: &AllowList, endpoint: &Endpoint) -> Result<(), String> {
    let (host, port) = endpoint.host_port();
    match allow.host(&host) {
        HostCheck::Allowed => Ok(()),
        HostCheck::Refused(why) => Err(why),
        HostCheck::Resolve => {
            let resolved = resolve_to_check(&host, port).await?;
            let ips: Vec<IpAddr> = resolved.iter().map(SocketAddr::ip).collect();
            allow.addresses(&host, &ips)
        }
    }
}

/// The connect-time check: the addresses to connect to for `host:port`,
/// every one of them allowed, or why there are none. The caller connects to
/// exactly these, so what was checked is what is reached.
pub async fn dial(allow: &AllowList, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match allow.host(host) {
        HostCheck::Refused(why) => Err(why),
        HostCheck::Allowed => resolve(host, port)
            .await
            .map_err(|why| format!("host {host} could not be resolved: {why}")),
        HostCheck::Resolve => {
            let resolved = resolve_to_check(host, port).await?;
            let ips: Vec<IpAddr> = resolved.iter().map(SocketAddr::ip).collect();
            allow.addresses(host, &ips)?;
            Ok(resolved)
        }
    }
}

/// The addresses of a name no name entry matches, to check them; the error
/// says why it could not be checked.
async fn resolve_to_check(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    resolve(host, port).await.map_err(|why| {
        format!(
            "host {host} is not in {ALLOW_FLAG} by name, and could not be resolved to check its addresses: {why}"
        )
    })
}

/// The addresses of `host:port` (an IP literal is its own), within
/// [`RESOLVE_TIMEOUT`]; the error says why not.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse("forward_endpoint", url).unwrap()
    }

    #[test]
    fn the_listener_itself_is_refused_under_any_local_name() {
        let own: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        for url in [
            "http://127.0.0.1:50051/a.B/C",
            "http://localhost:50051/a.B/C",
            "http://LOCALHOST:50051/a.B/C",
            "http://[::1]:50051/a.B/C",
            "http://0.0.0.0:50051/a.B/C",
            "http://127.0.0.2:50051/a.B/C",
        ] {
            assert!(own_address(&endpoint(url), own).is_some(), "{url}");
        }
        for url in [
            "http://127.0.0.1:50052/a.B/C",
            "http://10.0.0.7:50051/a.B/C",
            "http://payments:50051/a.B/C",
            "http://127.0.0.1/a.B/C",
        ] {
            assert!(own_address(&endpoint(url), own).is_none(), "{url}");
        }
        let all: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert!(own_address(&endpoint("http://127.0.0.1:7000/a.B/C"), all).is_some());
        let public: SocketAddr = "10.0.0.7:7000".parse().unwrap();
        assert!(own_address(&endpoint("http://10.0.0.7:7000/a.B/C"), public).is_some());
    }

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries.iter().copied()).unwrap()
    }

    /// What the list says of an endpoint's host, with `resolved` standing in
    /// for DNS when the list asks for it: "allowed", "refused" or, for a
    /// name that must be resolved and was not given addresses, "resolve".
    fn verdict(allow: &AllowList, url: &str, resolved: &[&str]) -> &'static str {
        let (host, _) = endpoint(url).host_port();
        match allow.host(&host) {
            HostCheck::Allowed => "allowed",
            HostCheck::Refused(why) => {
                assert!(why.contains(&host) && why.contains(ALLOW_FLAG), "{why}");
                "refused"
            }
            HostCheck::Resolve if resolved.is_empty() => "resolve",
            HostCheck::Resolve => {
                let ips: Vec<IpAddr> = resolved.iter().map(|ip| ip.parse().unwrap()).collect();
                match allow.addresses(&host, &ips) {
                    Ok(()) => "allowed",
                    Err(why) => {
                        assert!(why.contains(&host) && why.contains(ALLOW_FLAG), "{why}");
                        "refused"
                    }
                }
            }
        }
    }

    #[test]
    fn entries_against_endpoints() {
        let metadata = "http://169.254.169.254:80/a.B/C";
        #[rustfmt::skip]
        let table: &[(&[&str], &str, &[&str], &str)] = &[
            // entries, endpoint, what DNS says (names only), verdict
            (&["127.0.0.1/32"], "http://127.0.0.1:7002/a.B/C", &[], "allowed"),
            (&["127.0.0.1/32"], "http://127.0.0.2:7002/a.B/C", &[], "refused"),
            (&["127.0.0.1/32"], "http://[::1]:7002/a.B/C", &[], "refused"),
            (&["127.0.0.1"], "http://127.0.0.1:7002/a.B/C", &[], "allowed"),
            (&["10.0.0.0/8"], "http://10.200.3.4:7002/a.B/C", &[], "allowed"),
            (&["10.0.0.0/8"], metadata, &[], "refused"),
            (&["10.0.0.0/8"], "http://11.0.0.1:7002/a.B/C", &[], "refused"),
            // An IPv4-mapped IPv6 literal is the IPv4 address it reaches.
            (&["10.0.0.0/8"], "http://[::ffff:10.1.2.3]:7002/a.B/C", &[], "allowed"),
            (&["10.0.0.0/8"], "http://[::ffff:169.254.169.254]:80/a.B/C", &[], "refused"),
            (&["::ffff:10.1.2.3"], "http://10.1.2.3:7002/a.B/C", &[], "allowed"),
            (&["fd00::/8"], "http://[fd12::7]:7002/a.B/C", &[], "allowed"),
            (&["fd00::/8"], "http://[fe80::1]:7002/a.B/C", &[], "refused"),
            (&["::1"], "http://[::1]:7002/a.B/C", &[], "allowed"),
            (&["[::1]"], "http://[::1]:7002/a.B/C", &[], "allowed"),
            // A name entry matches names only, whole, in any case.
            (&["payments.internal"], "http://payments.internal:7002/a.B/C", &[], "allowed"),
            (&["payments.internal"], "http://PAYMENTS.Internal:7002/a.B/C", &[], "allowed"),
            (&["Payments.Internal."], "http://payments.internal.:7002/a.B/C", &[], "allowed"),
            (&["payments.internal"], "http://evil-payments.internal:7002/a.B/C", &[], "refused"),
            (&["payments.internal"], "http://payments.internal.evil:7002/a.B/C", &[], "refused"),
            (&["payments.internal"], "http://10.0.0.7:7002/a.B/C", &[], "refused"),
            (&["payments.internal"], metadata, &[], "refused"),
            // A wildcard matches names under the suffix, not the suffix itself.
            (&["*.svc.cluster.local"], "http://pay.shop.svc.cluster.local:80/a.B/C", &[], "allowed"),
            (&["*.svc.cluster.local"], "http://PAY.svc.cluster.local:80/a.B/C", &[], "allowed"),
            (&["*.svc.cluster.local"], "http://svc.cluster.local:80/a.B/C", &[], "refused"),
            (&["*.svc.cluster.local"], "http://evilsvc.cluster.local:80/a.B/C", &[], "refused"),
            (&["*.svc.cluster.local"], "http://10.0.0.7:80/a.B/C", &[], "refused"),
            // A name no name entry matches is allowed through its addresses,
            // all of them, when there are network entries.
            (&["10.0.0.0/8"], "http://pay.example:7002/a.B/C", &[], "resolve"),
            (&["10.0.0.0/8"], "http://pay.example:7002/a.B/C", &["10.0.0.7"], "allowed"),
            (&["10.0.0.0/8"], "http://pay.example:7002/a.B/C", &["10.0.0.7", "10.9.9.9"], "allowed"),
            (&["10.0.0.0/8"], "http://pay.example:7002/a.B/C", &["10.0.0.7", "169.254.169.254"], "refused"),
            (&["10.0.0.0/8"], "http://pay.example:7002/a.B/C", &["::ffff:169.254.169.254"], "refused"),
            (&["10.0.0.0/8", "fd00::/8"], "http://pay.example:7002/a.B/C", &["10.0.0.7", "fd00::7"], "allowed"),
            (&["10.0.0.0/8", "other.internal"], "http://pay.example:7002/a.B/C", &["192.168.0.1"], "refused"),
            (&["127.0.0.0/8"], "http://localhost:7002/a.B/C", &["127.0.0.1", "::1"], "refused"),
            (&["127.0.0.0/8", "::1"], "http://localhost:7002/a.B/C", &["127.0.0.1", "::1"], "allowed"),
            // A name entry vouches for its name: no DNS is asked.
            (&["10.0.0.0/8", "pay.example"], "http://pay.example:7002/a.B/C", &[], "allowed"),
            // Several entries: any one allows.
            (&["payments.internal", "*.svc.cluster.local", "10.0.0.0/8"], "http://10.1.1.1:7002/a.B/C", &[], "allowed"),
            (&["payments.internal", "*.svc.cluster.local", "10.0.0.0/8"], "https://x.svc.cluster.local/a.B/C", &[], "allowed"),
            (&["payments.internal", "*.svc.cluster.local", "10.0.0.0/8"], metadata, &[], "refused"),
        ];
        for (entries, url, resolved, expected) in table {
            let got = verdict(&list(entries), url, resolved);
            assert_eq!(
                got, *expected,
                "entries {entries:?}, endpoint {url}, DNS {resolved:?}"
            );
        }
    }

    #[test]
    fn a_name_that_resolves_to_nothing_is_refused() {
        let why = list(&["10.0.0.0/8"])
            .addresses("pay.example", &[])
            .unwrap_err();
        assert!(why.contains("resolves to no address"), "{why}");
    }

    #[test]
    fn entries_are_read_strictly_and_shown_as_written() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            (" 10.0.0.7 ", "10.0.0.7"),
            ("::1", "::1"),
            ("[fd00::1]", "fd00::1"),
            ("fd00::/8", "fd00::/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("Payments.Internal", "payments.internal"),
            ("payments.internal.", "payments.internal"),
            ("localhost", "localhost"),
            ("*.svc.cluster.local", "*.svc.cluster.local"),
            ("my_service.internal", "my_service.internal"),
        ] {
            let entry: AllowEntry = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(entry.to_string(), shown, "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("10.0.0.0/33", "not a CIDR"),
            ("10.0.0/8", "not a CIDR"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("fd00::1/8", "did you mean fd00::/8"),
            ("300.1.1.1", "neither an IP address nor a host name"),
            ("10.0.0", "neither an IP address nor a host name"),
            ("http://payments.internal", "is a URL"),
            ("payments.internal:443", "without a port"),
            ("pay.*.internal", "wildcard"),
            ("*", "wildcard"),
            ("*.", "not a host name"),
            ("pay..internal", "not a host name"),
            ("-pay.internal", "not a host name"),
            ("pay ments", "not a host name"),
        ] {
            let err = text.parse::<AllowEntry>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
            if !text.is_empty() {
                assert!(err.contains(text.trim()), "the entry is named: {err}");
            }
        }
        let err = AllowList::parse(Vec::<&str>::new()).unwrap_err();
        assert!(err.contains("allow no participant host"), "{err}");
        let err = AllowList::parse(["10.0.0.0/8", "bad/8"]).unwrap_err();
        assert!(err.contains("'bad/8'"), "{err}");
    }

    #[tokio::test]
    async fn registration_resolves_only_names_no_name_entry_matches() {
        let allow = list(&["127.0.0.1/32", "pay.invalid"]);
        // Allowed by name: no DNS asked (`.invalid` never resolves, RFC 6761).
        assert_eq!(
            admit(&allow, &endpoint("http://pay.invalid:7/a.B/C")).await,
            Ok(())
        );
        assert_eq!(
            admit(&allow, &endpoint("http://127.0.0.1:7/a.B/C")).await,
            Ok(())
        );
        let why = admit(&allow, &endpoint("http://127.0.0.2:7/a.B/C"))
            .await
            .unwrap_err();
        assert_eq!(why, "host 127.0.0.2 is not in --participant-allow");
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_addresses_checked() {
        let allow = list(&["127.0.0.1/32"]);
        assert_eq!(
            dial(&allow, "127.0.0.1", 7).await,
            Ok(vec!["127.0.0.1:7".parse().unwrap()])
        );
        let why = dial(&allow, "::1", 7).await.unwrap_err();
        assert!(
            why.contains("host ::1 is not in --participant-allow"),
            "{why}"
        );
    }
}
