//! The same load against Janus's VideoRoom plugin (`probe sfu --janus URL`): the reference SFU
//! a user would otherwise install (Debian ships `janus`). Janus is driven through its HTTP API
//! (<https://janus.conf.meetecho.com/docs/rest.html>): a session, one plugin handle per peer
//! connection, long polls for the asynchronous events that carry its SDP.
//!
//! Janus's VideoRoom has no peer connection that both publishes and subscribes: a publisher
//! is one handle (our str0m client offers a send-only VP8 track with `joinandconfigure`), and
//! each participant that receives gets one subscriber handle carrying every other publisher's
//! stream (a multistream `join` with one `streams` entry per feed; Janus offers, the client
//! answers with `start`). So an N × N room is 2N peer connections on Janus against N on
//! natpass's SFU; the packets forwarded are the same.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer};

use super::{Client, SfuProbeError};

/// Where Janus's HTTP API is, and the session on it.
pub(super) struct Janus {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    host: String,
    /// The API's base path (`/janus`).
    path: String,
    session: u64,
    /// The handle that created the room (and destroys it).
    admin: u64,
    room: u64,
    transaction: u64,
    /// Events that arrived for another handle than the one being waited for.
    pending: Vec<Value>,
}

fn refused(what: &str, error: impl ToString) -> SfuProbeError {
    SfuProbeError::Refused {
        what: format!("janus: {what}"),
        error: error.to_string(),
    }
}

/// `http://host:port/path` → (address, host, path). Only plain HTTP: the API is on loopback.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), SfuProbeError> {
    let bad = |why: &str| SfuProbeError::Options(format!("--janus {url:?}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("expected http://HOST:PORT/PATH (Janus's HTTP API)"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, "janus"));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host resolves to no address"))?;
    Ok((
        addr,
        host.to_string(),
        format!("/{}", path.trim_end_matches('/')),
    ))
}

impl Janus {
    /// A session on the API at `url`, and a room for `publishers` publishers.
    pub(super) fn connect(url: &str, publishers: usize) -> Result<Self, SfuProbeError> {
        let (addr, host, path) = parse_url(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut j = Self {
            rt,
            addr,
            host,
            path,
            session: 0,
            admin: 0,
            room: 0,
            transaction: 0,
            pending: Vec::new(),
        };
        let r = j.post("", json!({"janus": "create"}))?;
        j.session = id(&r, "create")?;
        j.admin = j.attach()?;
        // A room of our own, numbered so that two probes never share one.
        let room = u64::from(std::process::id()) << 20 | u64::from(rand::random::<u16>());
        let r = j.message(
            j.admin,
            json!({"request": "create", "room": room, "publishers": publishers,
                   "videocodec": "vp8", "bitrate": 0, "permanent": false}),
            None,
        )?;
        plugin_ok(&r, "creating the room")?;
        j.room = room;
        Ok(j)
    }

    /// One HTTP exchange: `body` (POST) or a long poll (GET) on `suffix` of the API path.
    fn exchange(&mut self, suffix: &str, body: Option<Value>) -> Result<Value, SfuProbeError> {
        let uri = format!("{}{suffix}", self.path);
        let (addr, host) = (self.addr, self.host.clone());
        self.rt.block_on(async move {
            let go = async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (mut tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                let req = hyper::Request::builder()
                    .method(if body.is_some() { "POST" } else { "GET" })
                    .uri(uri)
                    .header("host", host)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(
                        body.map(|b| b.to_string()).unwrap_or_default(),
                    )))
                    .map_err(std::io::Error::other)?;
                let res = tx.send_request(req).await.map_err(std::io::Error::other)?;
                let status = res.status();
                let bytes = res
                    .into_body()
                    .collect()
                    .await
                    .map_err(std::io::Error::other)?
                    .to_bytes();
                if !status.is_success() {
                    return Err(std::io::Error::other(format!("HTTP {status}")));
                }
                serde_json::from_slice::<Value>(&bytes).map_err(std::io::Error::other)
            };
            // Janus holds a long poll for at most 30 s.
            tokio::time::timeout(Duration::from_secs(35), go)
                .await
                .map_err(|_| refused("the HTTP API", "no answer in 35 s"))?
                .map_err(|e| refused("the HTTP API", e))
        })
    }

    /// A request with a fresh transaction; Janus's own errors become `Refused`.
    fn post(&mut self, suffix: &str, mut body: Value) -> Result<Value, SfuProbeError> {
        self.transaction += 1;
        body["transaction"] = json!(format!("t{}", self.transaction));
        let r = self.exchange(suffix, Some(body))?;
        if r["janus"] == "error" {
            return Err(refused(
                "a request",
                r["error"]["reason"].as_str().unwrap_or("error"),
            ));
        }
        Ok(r)
    }

    fn attach(&mut self) -> Result<u64, SfuProbeError> {
        let r = self.post(
            &format!("/{}", self.session),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )?;
        id(&r, "attach")
    }

    fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, SfuProbeError> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.post(&format!("/{}/{handle}", self.session), m)
    }

    /// The next plugin event for `handle` that carries SDP (its `jsep`), long-polling until
    /// `deadline`; a plugin error for it ends the wait (`Ok(Err(code))` for Janus's "no such
    /// feed", 428: a publisher whose peer connection is not up yet).
    fn jsep(&mut self, handle: u64, deadline: Instant) -> Result<Value, SfuProbeError> {
        match self.jsep_or_no_feed(handle, deadline)? {
            Some(j) => Ok(j),
            None => Err(refused("an event", "no such feed")),
        }
    }

    fn jsep_or_no_feed(
        &mut self,
        handle: u64,
        deadline: Instant,
    ) -> Result<Option<Value>, SfuProbeError> {
        loop {
            if let Some(k) = self
                .pending
                .iter()
                .position(|e| e["sender"].as_u64() == Some(handle))
            {
                let e = self.pending.remove(k);
                const NO_SUCH_FEED: u64 = 428;
                let data = &e["plugindata"]["data"];
                if data["error_code"].as_u64() == Some(NO_SUCH_FEED) {
                    return Ok(None);
                }
                if let Some(err) = data["error"].as_str() {
                    return Err(refused("an event", err));
                }
                if e["jsep"].is_object() {
                    return Ok(Some(e["jsep"].clone()));
                }
                continue;
            }
            if Instant::now() > deadline {
                return Err(refused("waiting for SDP", "none arrived in time"));
            }
            let r = self.exchange(&format!("/{}?maxev=10", self.session), None)?;
            match r {
                Value::Array(events) => self.pending.extend(events),
                e => self.pending.push(e),
            }
        }
    }

    /// Publisher `k` (feed `k + 1`): `client` offers its VP8 track, Janus answers.
    pub(super) fn publish(
        &mut self,
        k: usize,
        client: &mut Client,
        deadline: Instant,
    ) -> Result<(), SfuProbeError> {
        let (offer, pending) = client.offer(true)?;
        let h = self.attach()?;
        self.message(
            h,
            json!({"request": "joinandconfigure", "room": self.room, "ptype": "publisher",
                   "id": k + 1, "display": format!("p{k}"), "audio": false, "video": true}),
            Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
        )?;
        let jsep = self.jsep(h, deadline)?;
        let answer = SdpAnswer::from_sdp_string(jsep["sdp"].as_str().unwrap_or_default())
            .map_err(|e| refused("its answer", e))?;
        client
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| refused("its answer", e))
    }

    /// A subscriber handle for `client` carrying publishers `feeds` (0-based): Janus offers,
    /// the client answers. A feed exists once its publisher's peer connection is up: until
    /// then the join is retried, with `wait` (which moves the publishers' packets) in between.
    pub(super) fn subscribe(
        &mut self,
        feeds: &[usize],
        client: &mut Client,
        deadline: Instant,
        wait: &mut dyn FnMut(),
    ) -> Result<(), SfuProbeError> {
        let h = self.attach()?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f + 1})).collect();
        let jsep = loop {
            self.message(
                h,
                json!({"request": "join", "room": self.room, "ptype": "subscriber",
                       "streams": streams}),
                None,
            )?;
            if let Some(j) = self.jsep_or_no_feed(h, deadline)? {
                break j;
            }
            if Instant::now() > deadline {
                return Err(refused(
                    "subscribing",
                    "the publishers' feeds never came up",
                ));
            }
            wait();
        };
        let offer = SdpOffer::from_sdp_string(jsep["sdp"].as_str().unwrap_or_default())
            .map_err(|e| refused("its offer", e))?;
        let answer = client
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| refused("its offer", e))?;
        self.message(
            h,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer.to_sdp_string(), "trickle": false})),
        )?;
        Ok(())
    }

    /// Destroy the room and the session (which hangs up every handle).
    pub(super) fn close(&mut self) {
        let (admin, room) = (self.admin, self.room);
        let _ = self.message(admin, json!({"request": "destroy", "room": room}), None);
        let _ = self.post(&format!("/{}", self.session), json!({"janus": "destroy"}));
    }
}

/// `data.id` of a `success` answer.
fn id(r: &Value, what: &str) -> Result<u64, SfuProbeError> {
    r["data"]["id"]
        .as_u64()
        .ok_or_else(|| refused(what, format!("no id in {r}")))
}

/// A synchronous plugin answer without an error.
fn plugin_ok(r: &Value, what: &str) -> Result<(), SfuProbeError> {
    match r["plugindata"]["data"]["error"].as_str() {
        Some(e) => Err(refused(what, e)),
        None if r["janus"] == "success" => Ok(()),
        None => Err(refused(what, format!("unexpected answer {r}"))),
    }
}

/// The process with `comm` `janus` (the one `probe sfu --janus` measures when no
/// `--janus-pid` is given): exactly one, or an error naming what was found.
pub(super) fn find_pid() -> Result<u32, SfuProbeError> {
    let found: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "janus")
        })
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err(SfuProbeError::Options(
            "--janus: no janus process to measure (give --janus-pid)".into(),
        )),
        _ => Err(SfuProbeError::Options(format!(
            "--janus: several janus processes {found:?}: give --janus-pid"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_the_flag_named() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8088/janus").unwrap();
        assert_eq!(addr, "127.0.0.1:8088".parse().unwrap());
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1:8088", "/janus"));
        assert_eq!(parse_url("http://127.0.0.1:8088").unwrap().2, "/janus");
        for bad in [
            "https://127.0.0.1:8089/janus",
            "127.0.0.1:8088",
            "http://nohost/janus",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.contains("--janus"), "{e}");
        }
    }
}
