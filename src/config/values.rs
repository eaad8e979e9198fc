//! Small value types of the configuration, each parsed from one string on the command line
//! and in the file (`MIN-MAX`, `PUBLIC/PRIVATE`, `NAME:PASSWORD`, a CIDR).

use crate::relay::policy::parse_net;
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

macro_rules! from_str_de {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A CIDR range (or a bare IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);
impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_net(s).map(Cidr)
    }
}
from_str_de!(Cidr);

/// `MIN-MAX` relay port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}
impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a port range (expected MIN-MAX, e.g. 49152-65535)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(format!("`{s}`: MIN must be at least 1 and not above MAX"));
        }
        Ok(Self { min, max })
    }
}
from_str_de!(PortRange);

/// `PUBLIC` or `PUBLIC/PRIVATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// Advertised.
    pub public: IpAddr,
    /// Bound (when different).
    pub private: Option<IpAddr>,
}
impl FromStr for ExternalIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |p: &str| format!("`{p}` is not an IP address (expected PUBLIC or PUBLIC/PRIVATE)");
        match s.split_once('/') {
            Some((p, q)) => {
                let public: IpAddr = p.trim().parse().map_err(|_| bad(p))?;
                let private: IpAddr = q.trim().parse().map_err(|_| bad(q))?;
                if public.is_ipv4() != private.is_ipv4() {
                    return Err(format!(
                        "`{s}`: PUBLIC and PRIVATE must be of the same family"
                    ));
                }
                Ok(Self {
                    public,
                    private: Some(private),
                })
            }
            None => Ok(Self {
                public: s.trim().parse().map_err(|_| bad(s))?,
                private: None,
            }),
        }
    }
}
from_str_de!(ExternalIp);

/// A static user: `NAME:PASSWORD` or `NAME:0xKEY` (MD5 of `NAME:REALM:PASSWORD`, as coturn).
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    pub(super) secret: String,
}
impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserSpec({}:<redacted>)", self.name)
    }
}
impl FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, secret) = s
            .split_once(':')
            .ok_or_else(|| "a user must be NAME:PASSWORD or NAME:0xKEY".to_owned())?;
        if name.is_empty() || secret.is_empty() {
            return Err(
                "a user must be NAME:PASSWORD or NAME:0xKEY with both parts non-empty".into(),
            );
        }
        if name.len() > 512 || secret.len() > 512 {
            return Err("user name and password are limited to 512 bytes".into());
        }
        Ok(Self {
            name: name.into(),
            secret: secret.into(),
        })
    }
}
from_str_de!(UserSpec);

/// A key that takes one value or a list of them (`xdp-interface = "eth0"` or `["a", "b"]`).
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}
