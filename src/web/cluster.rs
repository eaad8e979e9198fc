//! Rooms across several natpass processes through Redis (`--redis URL`).
//!
//! One node at a time keeps the rooms: the leader, elected with a lease in Redis
//! (`natpass:signal:leader`, `SET NX PX`, renewed every second by compare-and-expire). Every
//! node keeps its own sockets; an event from a socket on another node reaches the leader over
//! Redis pub/sub (`natpass:signal:node:<id>`, one channel per node), the leader runs it through
//! the one room engine ([`crate::signal::driver`]), and what it causes goes back to the nodes
//! holding the sockets it names. Each node publishes through one connection and reads one
//! subscription, and Redis keeps the order of a connection's messages, so a client's events
//! keep their order end to end.
//!
//! Faults: a node that stops renewing its liveness key (`natpass:signal:alive:<id>`, a lease
//! renewed every second) for a lease is gone — killed, or cut off from Redis — and the leader
//! detaches its participants (they leave after the grace period unless they resume elsewhere).
//! A Redis that is down makes `/readyz` say so; when it comes back, or when the leader
//! changes (the old one is gone: its rooms went with it), every node closes its signaling
//! sockets, and clients reconnect by themselves — resuming their identity when the leader kept
//! it, joining afresh otherwise (at worst a reconnect, as the page handles).
//!
//! Why fred and not the socketioxide Redis adapter: the adapter spreads broadcasts to Socket.IO
//! rooms, but natpass's rooms need a cap checked atomically, identities that outlive a socket
//! and buffered delivery across a reconnect to another node — one room engine in one place
//! gives all of that; fred gives a client that reconnects and resubscribes by itself.

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, LuaInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Expiration, SetOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

const LEADER_KEY: &str = "natpass:signal:leader";
/// Lease of the leader, renewed every [`TICK`].
const LEASE_MS: i64 = 5000;
const TICK: Duration = Duration::from_secs(1);
/// Messages waiting to be published (a Redis that is slow or gone): beyond this they are
/// dropped, and this node's sockets start over, as after an outage.
const OUTBOX: usize = 8192;
/// Renew the lease only if it is still ours.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// A node's liveness key, set for a lease every [`TICK`]: a node whose key has expired is gone
/// (crashed, or cut off from Redis), and the leader detaches its participants.
fn alive_key(node: &str) -> String {
    format!("natpass:signal:alive:{node}")
}

/// The channel of one node.
fn channel(node: &str) -> String {
    format!("natpass:signal:node:{node}")
}

/// What the cluster tells the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message for this node.
    Message(String),
    /// The leader is now this node (`true`) or another one; the rooms this node kept, if any,
    /// are gone, and its sockets must start over.
    Leader(bool),
    /// Redis is back after an outage: messages may have been lost meanwhile.
    Recovered,
}

/// This node's link to the others.
pub struct Cluster {
    node: String,
    url: String,
    client: Client,
    subscriber: SubscriberClient,
    out: mpsc::Sender<(String, String)>,
    out_rx: std::sync::Mutex<Option<mpsc::Receiver<(String, String)>>>,
    /// Set once the outbox overflowed, until the hub has been told.
    overflowed: AtomicBool,
    changes: std::sync::OnceLock<mpsc::UnboundedSender<Change>>,
    leader: RwLock<Option<String>>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
#[error("redis {url}: {message}")]
pub struct ClusterError {
    url: String,
    message: String,
}

/// Is `url` a Redis URL natpass can use? (For the config check.)
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err(
            "TLS to Redis (rediss://) is not built in: reach it over a private network".into(),
        );
    }
    if !url.starts_with("redis://") {
        return Err("expected redis://[:PASSWORD@]HOST:PORT[/DB]".into());
    }
    Config::from_url(url)
        .map(|_| ())
        .map_err(|e| e.details().to_owned())
}

impl Cluster {
    /// Connect to Redis at `url` as node `node` (a clear error naming the URL when it cannot).
    pub async fn connect(url: &str, node: String) -> Result<Arc<Cluster>, ClusterError> {
        let err = |e: fred::error::Error| ClusterError {
            url: redact(url),
            message: e.details().to_owned(),
        };
        check_url(url).map_err(|message| ClusterError {
            url: redact(url),
            message,
        })?;
        let config = Config::from_url(url).map_err(err)?;
        let policy = ReconnectPolicy::new_exponential(0, 100, 2000, 2);
        let mut b = fred::types::Builder::from_config(config);
        b.set_policy(policy).with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
            c.internal_command_timeout = Duration::from_secs(3);
        });
        b.with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(3);
            // Messages waiting between the subscription and the hub: a burst larger than this
            // is lost and every socket of the node has to start over, so leave a lot of room.
            p.broadcast_channel_capacity = 8192;
        });
        let client = b.build().map_err(err)?;
        let subscriber = b.build_subscriber_client().map_err(err)?;
        let start = async {
            client.init().await?;
            subscriber.init().await?;
            subscriber.subscribe(channel(&node)).await?;
            Ok::<_, fred::error::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), start).await {
            Ok(r) => r.map_err(err)?,
            Err(_) => {
                return Err(ClusterError {
                    url: redact(url),
                    message: "no answer within 5 s".into(),
                });
            }
        }
        // Resubscribes by itself after a reconnect (its task lives on without the handle).
        drop(subscriber.manage_subscriptions());
        let (out, out_rx) = mpsc::channel(OUTBOX);
        tracing::info!(node = %node, redis = %redact(url), "signaling rooms shared through redis");
        Ok(Arc::new(Cluster {
            node,
            url: url.to_owned(),
            client,
            subscriber,
            out,
            out_rx: std::sync::Mutex::new(Some(out_rx)),
            overflowed: AtomicBool::new(false),
            changes: std::sync::OnceLock::new(),
            leader: RwLock::new(None),
            healthy: AtomicBool::new(true),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The leader's id, when known.
    pub fn leader(&self) -> Option<String> {
        self.leader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Does this node keep the rooms?
    pub fn is_leader(&self) -> bool {
        self.leader().as_deref() == Some(self.node.as_str())
    }

    /// Is Redis reachable (as of the last second)?
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Send `text` to `node` (in order with everything else this node sends).
    /// When too much is waiting (Redis slow or gone), it is dropped and this node's sockets
    /// start over ([`Change::Recovered`]) once the outbox has room again.
    pub fn publish(&self, node: &str, text: String) {
        if self.out.try_send((channel(node), text)).is_err()
            && !self.overflowed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                waiting = OUTBOX,
                "signaling messages for other nodes dropped: redis is not keeping up"
            );
        }
    }

    /// Run the publisher, the subscription and the election until `changes` is dropped.
    pub fn spawn(self: &Arc<Self>, changes: mpsc::UnboundedSender<Change>) {
        let _ = self.changes.set(changes.clone());
        if let Some(mut rx) = self.out_rx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let me = self.clone();
            tokio::spawn(async move {
                while let Some((ch, text)) = rx.recv().await {
                    if let Err(e) = me.client.publish::<(), _, _>(ch, text).await {
                        tracing::debug!(error = %e, "redis publish failed");
                    }
                    if rx.is_empty() && me.overflowed.swap(false, Ordering::Relaxed) {
                        if let Some(c) = me.changes.get() {
                            let _ = c.send(Change::Recovered);
                        }
                    }
                }
            });
        }
        let mut messages = self.subscriber.message_rx();
        let tx = changes.clone();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(m) => {
                        if let Some(text) = m.value.as_string() {
                            if tx.send(Change::Message(text)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            lost = n,
                            "signaling messages from redis dropped (too slow)"
                        );
                        if tx.send(Change::Recovered).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.elect(changes).await });
    }

    async fn elect(self: Arc<Self>, changes: mpsc::UnboundedSender<Change>) {
        let mut missing = 0u32;
        // The last leader known: A, then nobody for a while, then B is a change too.
        let mut last: Option<String> = None;
        let mut t = tokio::time::interval(TICK);
        loop {
            t.tick().await;
            if changes.is_closed() {
                return;
            }
            let seen = self.leader();
            let result = self.election_round(seen.as_deref(), &mut missing).await;
            match result {
                Ok(now) => {
                    if !self.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("redis reachable again");
                        let _ = changes.send(Change::Recovered);
                    }
                    if now != seen {
                        tracing::info!(leader = now.as_deref().unwrap_or("none"), me = %self.node, "signaling leader");
                        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = now.clone();
                        // The first leader seen is no change: there were no rooms before it.
                        if let Some(l) = now {
                            if last.as_ref().is_some_and(|p| *p != l) {
                                let _ = changes.send(Change::Leader(l == self.node));
                            }
                            last = Some(l);
                        }
                    }
                }
                Err(e) => {
                    if self.healthy.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, redis = %redact(&self.url), "redis unreachable: rooms across nodes are on hold");
                    }
                }
            }
        }
    }

    /// Which of `nodes` have stopped saying they are alive (their key expired).
    pub async fn gone(&self, nodes: Vec<String>) -> Result<Vec<String>, ClusterError> {
        let mut gone = Vec::new();
        for n in nodes {
            let here: i64 = self
                .client
                .exists(alive_key(&n))
                .await
                .map_err(|e| ClusterError {
                    url: redact(&self.url),
                    message: e.details().to_owned(),
                })?;
            if here == 0 {
                gone.push(n);
            }
        }
        Ok(gone)
    }

    /// One round of the election: who leads now. Also renews this node's liveness key.
    async fn election_round(
        &self,
        seen: Option<&str>,
        missing: &mut u32,
    ) -> Result<Option<String>, fred::error::Error> {
        let () = self
            .client
            .set(
                alive_key(&self.node),
                1,
                Some(Expiration::PX(LEASE_MS)),
                None,
                false,
            )
            .await?;
        if seen == Some(self.node.as_str()) {
            let renewed: i64 = self
                .client
                .eval(
                    RENEW,
                    vec![LEADER_KEY],
                    vec![self.node.clone(), LEASE_MS.to_string()],
                )
                .await?;
            if renewed == 1 {
                return Ok(Some(self.node.clone()));
            }
            // Lost (Redis restarted, or the lease ran out): claim it again if nobody has.
            if self.claim().await? {
                return Ok(Some(self.node.clone()));
            }
            return self.client.get(LEADER_KEY).await;
        }
        let current: Option<String> = self.client.get(LEADER_KEY).await?;
        if current.is_some() {
            *missing = 0;
            return Ok(current);
        }
        // Nobody leads. Give a leader that is still alive (Redis restarted under it) a round to
        // claim its lease back before taking over; at start, there is nobody to wait for.
        *missing += 1;
        if seen.is_none() || *missing >= 2 {
            if self.claim().await? {
                return Ok(Some(self.node.clone()));
            }
            return self.client.get(LEADER_KEY).await;
        }
        Ok(seen.map(str::to_owned))
    }

    async fn claim(&self) -> Result<bool, fred::error::Error> {
        let r: Option<String> = self
            .client
            .set(
                LEADER_KEY,
                self.node.clone(),
                Some(Expiration::PX(LEASE_MS)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(r.is_some())
    }
}

/// A Redis URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("http://x").is_err());
        assert!(check_url("rediss://x:6379").is_err());
    }
}
