//! Client address allow lists (`allow_list`): CIDR ranges, IPv4 and IPv6. Pure.

use std::net::IpAddr;

/// One CIDR range, kept as its network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    network: IpAddr,
    prefix: u8,
}

/// The client addresses a tenant accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    ranges: Vec<Range>,
}

impl AllowList {
    /// Parses ranges such as `10.0.0.0/8`, `::/0` or `192.168.1.7` (one host).
    /// Surrounding spaces are ignored; a range with host bits set is refused, since
    /// it usually means a typo.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let text = item.as_ref().trim();
            let bad = || format!("invalid CIDR range: {text:?}");
            let (addr, prefix) = match text.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (text, None),
            };
            let network: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            };
            let range = Range { network, prefix };
            if masked(network, prefix) != network {
                return Err(format!("invalid CIDR range: {text:?} has host bits set"));
            }
            ranges.push(range);
        }
        Ok(Self { ranges })
    }

    /// Whether `addr` falls in one of the ranges. IPv4 clients reaching an IPv6
    /// listener (`::ffff:a.b.c.d`) are matched as IPv4.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.ranges
            .iter()
            .any(|r| r.network.is_ipv4() == addr.is_ipv4() && masked(addr, r.prefix) == r.network)
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match() {
        let l = AllowList::parse(&["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8"]).unwrap();
        assert!(l.allows(ip("10.1.2.3")));
        assert!(!l.allows(ip("11.0.0.1")));
        assert!(l.allows(ip("192.168.1.7")));
        assert!(!l.allows(ip("192.168.1.8")));
        assert!(l.allows(ip("fd12::1")));
        assert!(!l.allows(ip("fe80::1")));
        assert!(l.allows(ip("::ffff:10.9.9.9")));
        let any = AllowList::parse(&["0.0.0.0/0", "::/0"]).unwrap();
        assert!(any.allows(ip("8.8.8.8")) && any.allows(ip("2001:db8::1")));
        let none = AllowList::parse::<&str>(&[]).unwrap();
        assert!(!none.allows(ip("127.0.0.1")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "foo",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "::/129",
            "1.2.3.4/x",
            "",
        ] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
