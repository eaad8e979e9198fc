//! What the node that keeps the rooms does with one request, as data in and data out: an
//! [`Op`] from a socket (on this node or, with Redis, on another one) goes through
//! [`execute`] over the [`Rooms`], and the [`Out`]s that come back are sent to the sockets they
//! name, wherever those are. Sans-IO like the rooms: no sockets, no clock (`now` comes in), no
//! randomness (fresh ids come in). The same types are the messages between nodes.

use super::rooms::{CompatEvent, Event, FreshIds, JoinRequest, Joined, Mode, Rooms, SignalError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Instant;

/// One socket, anywhere: the node that holds it and its Socket.IO id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node id.
    pub node: String,
    /// Socket id on that node.
    pub sid: String,
}

impl Endpoint {
    /// No socket (an [`Out::Sfu`] nobody waits for).
    pub fn nobody() -> Self {
        Self {
            node: String::new(),
            sid: String::new(),
        }
    }
}

/// A request for the room keeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// An event the socket sent, with its arguments and, if it asked for one, its ack number.
    Event {
        /// The socket.
        from: Endpoint,
        /// Event name.
        event: String,
        /// Its arguments.
        args: Vec<Value>,
        /// Ack number on the socket's node.
        ack: Option<u64>,
    },
    /// The socket's handshake carried a resume token (before it may be told anything).
    Attach {
        /// The socket.
        from: Endpoint,
        /// The token.
        token: String,
    },
    /// The socket is connected: answer its resume (`resumed` + backlog, or `resume-failed`).
    Activate {
        /// The socket.
        from: Endpoint,
        /// Whether its handshake carried a token.
        tried: bool,
    },
    /// The socket is gone.
    Detach {
        /// The socket.
        from: Endpoint,
    },
    /// The socket could not take these room events (a client that stopped reading): it is
    /// closed, and they wait for its resume.
    Bounced {
        /// The socket.
        from: Endpoint,
        /// What it could not take, in order.
        events: Vec<Event>,
    },
}

/// The answer to a join or a resume, before the socket's node adds its ICE servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinedWire {
    /// Participant id.
    pub you: String,
    /// Resume token.
    pub resume: String,
    /// Room.
    pub room: String,
    /// Everyone else: (id, name).
    pub participants: Vec<(String, String)>,
    /// How the room's media flows.
    #[serde(default)]
    pub mode: Mode,
}

/// What the node that runs the room's SFU must do (the room keeper's node: every participant
/// of a room meets in one SFU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sfu", rename_all = "kebab-case")]
pub enum SfuOp {
    /// A participant connects to the SFU with its offer (again, after a restart: its old
    /// session goes first); the answer goes back as the ack.
    Join {
        /// Room.
        room: String,
        /// Participant.
        pid: String,
        /// Its SDP offer.
        sdp: String,
    },
    /// A participant's answer to the SFU's offer.
    Answer {
        /// Room.
        room: String,
        /// Participant.
        pid: String,
        /// Its SDP answer.
        sdp: String,
    },
    /// A participant pinned another's tile (`target` None: unpinned).
    Pin {
        /// Room.
        room: String,
        /// Participant.
        pid: String,
        /// Whose tile.
        target: Option<String>,
    },
    /// A participant left the room: its session goes.
    Leave {
        /// Room.
        room: String,
        /// Participant.
        pid: String,
    },
}

/// Something to send to one socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "out", rename_all = "kebab-case")]
pub enum Out {
    /// A room event (kept for the participant if the socket cannot take it).
    Event {
        /// The socket.
        to: Endpoint,
        /// The event.
        event: Event,
    },
    /// A notice (no argument when `body` is `None`).
    Emit {
        /// The socket.
        to: Endpoint,
        /// Event name.
        event: String,
        /// Its one argument.
        body: Option<Value>,
    },
    /// The answer to an event that asked for an ack.
    Ack {
        /// The socket.
        to: Endpoint,
        /// Ack number on its node.
        ack: u64,
        /// The ack's arguments.
        args: Vec<Value>,
    },
    /// A join or resume answer: the socket's node completes it with its ICE servers and sends
    /// it as the ack `ack` or, without one, as the event `event`.
    Joined {
        /// The socket.
        to: Endpoint,
        /// Ack number, when the join asked for one.
        ack: Option<u64>,
        /// Event name otherwise (`joined`, `resumed`).
        event: String,
        /// The answer.
        joined: JoinedWire,
    },
    /// Close the socket.
    Close {
        /// The socket.
        to: Endpoint,
    },
    /// For the SFU of the node that keeps the rooms; its answer goes to `to` as the ack `ack`
    /// (`{sdp}` / `{ok}`, or `{error}`).
    Sfu {
        /// The socket that asked (for a leave: the keeper's own bookkeeping, no answer).
        to: Endpoint,
        /// Ack number on its node.
        ack: Option<u64>,
        /// What to do.
        op: SfuOp,
    },
}

impl Out {
    /// The socket this is for.
    pub fn to(&self) -> &Endpoint {
        match self {
            Out::Event { to, .. }
            | Out::Emit { to, .. }
            | Out::Ack { to, .. }
            | Out::Joined { to, .. }
            | Out::Sfu { to, .. }
            | Out::Close { to } => to,
        }
    }
}

fn wire(j: &Joined) -> JoinedWire {
    JoinedWire {
        you: j.you.clone(),
        resume: j.resume.clone(),
        room: j.room.clone(),
        participants: j.participants.clone(),
        mode: j.mode,
    }
}

/// Room events as sends.
pub fn deliveries(out: &mut Vec<Out>, d: Vec<(Endpoint, Event)>) {
    for (to, event) in d {
        out.push(Out::Event { to, event });
    }
}

/// A resume answer and its backlog, for `to`.
fn resumed(out: &mut Vec<Out>, to: &Endpoint, j: Joined) {
    out.push(Out::Joined {
        to: to.clone(),
        ack: None,
        event: "resumed".into(),
        joined: wire(&j),
    });
    deliveries(
        out,
        j.backlog.into_iter().map(|e| (to.clone(), e)).collect(),
    );
}

/// Carry out `op`. `ids` makes fresh participant ids when a join needs them.
pub fn execute(
    rooms: &mut Rooms<Endpoint>,
    op: Op,
    ids: &mut dyn FnMut() -> FreshIds,
    now: Instant,
) -> Vec<Out> {
    let mut out = Vec::new();
    match op {
        Op::Attach { from, token } => {
            rooms.attach(from, &token);
        }
        Op::Activate { from, tried } => {
            if let Some(j) = rooms.activate(&from) {
                resumed(&mut out, &from, j);
            } else if tried && !rooms.joined(&from) {
                out.push(Out::Emit {
                    to: from,
                    event: "resume-failed".into(),
                    body: Some(json!({})),
                });
            }
        }
        Op::Detach { from } => deliveries(&mut out, rooms.detach(&from, now)),
        Op::Bounced { from, events } => deliveries(&mut out, rooms.bounce(&from, events, now)),
        Op::Event {
            from,
            event,
            args,
            ack,
        } => {
            // A resumed socket's answer goes out before the answer to its first event.
            if let Some(j) = rooms.activate(&from) {
                resumed(&mut out, &from, j);
            }
            match event_op(rooms, &from, &event, args, ack, ids, now, &mut out) {
                Ok(None) => {}
                Ok(Some(args)) => {
                    if let Some(ack) = ack {
                        out.push(Out::Ack {
                            to: from,
                            ack,
                            args,
                        });
                    }
                }
                Err(e) => refuse(&mut out, from, &event, ack, &e.to_string()),
            }
        }
    }
    sfu_left(rooms, &mut out);
    out
}

/// The SFU sessions of participants who left SFU rooms go too. [`Out::Sfu`] is carried out
/// where it is made, on the node that keeps the rooms (whose SFU holds every SFU room).
pub fn sfu_left(rooms: &mut Rooms<Endpoint>, out: &mut Vec<Out>) {
    let left = rooms.take_sfu_left();
    if left.is_empty() {
        return;
    }
    for (room, pid) in left {
        out.push(Out::Sfu {
            to: Endpoint::nobody(),
            ack: None,
            op: SfuOp::Leave { room, pid },
        });
    }
}

/// The SFU room's new active speaker, for everyone in it.
pub fn sfu_speaker(rooms: &mut Rooms<Endpoint>, room: &str, pid: &str) -> Vec<Out> {
    let mut out = Vec::new();
    deliveries(
        &mut out,
        rooms.to_sfu_room(room, Event::Speaker { id: pid.to_owned() }),
    );
    out
}

/// A chat line the SFU could not deliver on `to`'s data channel: over signaling instead.
pub fn sfu_chat(
    rooms: &mut Rooms<Endpoint>,
    room: &str,
    to: &str,
    from: &str,
    text: &str,
) -> Vec<Out> {
    let mut out = Vec::new();
    deliveries(&mut out, rooms.sfu_chat(room, to, from, text));
    out
}

/// What the SFU said about participant `pid` of `room`, as room events for it.
pub fn sfu_event(rooms: &mut Rooms<Endpoint>, room: &str, pid: &str, event: Event) -> Vec<Out> {
    let mut out = Vec::new();
    deliveries(&mut out, rooms.to_sfu_member(room, pid, event));
    out
}

/// The answer to a refused event: the ack `{error}`, or an `error` event without one.
pub fn refuse(out: &mut Vec<Out>, to: Endpoint, event: &str, ack: Option<u64>, reason: &str) {
    out.push(match ack {
        Some(ack) => Out::Ack {
            to,
            ack,
            args: vec![json!({"error": reason})],
        },
        None => Out::Emit {
            to,
            event: "error".into(),
            body: Some(json!({"reason": reason, "event": event})),
        },
    });
}

/// Why an event was refused by the room keeper.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Room(#[from] SignalError),
    #[error("unknown event")]
    Unknown,
}

/// One event: `Some(ack arguments)`, or `None` when it already answered.
#[allow(clippy::too_many_arguments)]
fn event_op(
    rooms: &mut Rooms<Endpoint>,
    from: &Endpoint,
    event: &str,
    args: Vec<Value>,
    ack: Option<u64>,
    ids: &mut dyn FnMut() -> FreshIds,
    now: Instant,
    out: &mut Vec<Out>,
) -> Result<Option<Vec<Value>>, Refused> {
    let arg = args.first().cloned().unwrap_or(Value::Null);
    let text = |k: &str| arg.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let ok = || Some(vec![json!({"ok": true})]);
    Ok(match event {
        "join" => {
            let req = JoinRequest {
                room: text("room"),
                name: text("name"),
                resume: arg.get("resume").and_then(Value::as_str).map(str::to_owned),
                key: arg.get("key").and_then(Value::as_str).map(str::to_owned),
                mode: match arg.get("mode").and_then(Value::as_str) {
                    None | Some("") => None,
                    Some(m) => Some(Mode::parse(m).ok_or(SignalError::BadMode)?),
                },
            };
            let (joined, d) = rooms.join(from.clone(), req, ids(), now)?;
            // The answer first, then the backlog (a resume), then the others hear of it.
            out.push(Out::Joined {
                to: from.clone(),
                ack,
                event: "joined".into(),
                joined: wire(&joined),
            });
            deliveries(
                out,
                joined
                    .backlog
                    .into_iter()
                    .map(|e| (from.clone(), e))
                    .collect(),
            );
            deliveries(out, d);
            None
        }
        "signal" => {
            let data = arg
                .get("data")
                .cloned()
                .ok_or(SignalError::NoSuchParticipant)?;
            deliveries(out, rooms.signal(from, &text("to"), data)?);
            ok()
        }
        "chat" => {
            deliveries(out, rooms.chat(from, &text("text"))?);
            ok()
        }
        "sfu-join" | "sfu-answer" => {
            let (room, pid) = rooms.sfu_member(from)?;
            let sdp = text("sdp");
            let op = if event == "sfu-join" {
                SfuOp::Join { room, pid, sdp }
            } else {
                SfuOp::Answer { room, pid, sdp }
            };
            out.push(Out::Sfu {
                to: from.clone(),
                ack,
                op,
            });
            None
        }
        "sfu-pin" => {
            let (room, pid) = rooms.sfu_member(from)?;
            let target = arg
                .get("id")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= 64)
                .map(str::to_owned);
            out.push(Out::Sfu {
                to: from.clone(),
                ack: None,
                op: SfuOp::Pin { room, pid, target },
            });
            ok()
        }
        "leave" => {
            deliveries(out, rooms.leave(from)?);
            ok()
        }
        "join_room" => {
            let room = arg.as_str().unwrap_or("");
            deliveries(out, rooms.join_compat(from.clone(), room, ids())?);
            Some(Vec::new())
        }
        "offer" | "answer" | "ice" => {
            let kind = match event {
                "offer" => CompatEvent::Offer,
                "answer" => CompatEvent::Answer,
                _ => CompatEvent::Ice,
            };
            let room = args.get(1).and_then(Value::as_str).unwrap_or("");
            deliveries(out, rooms.relay_compat(from, room, kind, arg.clone())?);
            Some(Vec::new())
        }
        _ => return Err(Refused::Unknown),
    })
}

/// Close a room: every live socket of it is told and closed.
pub fn close_room(rooms: &mut Rooms<Endpoint>, room: &str) -> Vec<Out> {
    let mut out = Vec::new();
    for to in rooms.close_room(room).unwrap_or_default() {
        out.push(Out::Emit {
            to: to.clone(),
            event: "room-closed".into(),
            body: Some(json!({})),
        });
        out.push(Out::Close { to });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Limits;

    fn ep(node: &str, sid: &str) -> Endpoint {
        Endpoint {
            node: node.into(),
            sid: sid.into(),
        }
    }

    fn counter() -> impl FnMut() -> FreshIds {
        let mut n = 0;
        move || {
            n += 1;
            FreshIds {
                pid: format!("p{n}"),
                token: format!("t{n}"),
            }
        }
    }

    #[test]
    fn sfu_requests_go_to_the_sfu_only_from_sfu_rooms_and_leaves_end_sessions() {
        let mut rooms = Rooms::new(Limits {
            mesh_size: Some(4),
            ..Limits::default()
        });
        let mut ids = counter();
        let now = Instant::now();
        let (a, m) = (ep("n1", "a"), ep("n1", "m"));
        let join = |room: &str, mode: &str| vec![json!({"room": room, "name": "x", "mode": mode})];
        let out = execute(
            &mut rooms,
            ev(&a, "join", join("s", "sfu"), Some(1)),
            &mut ids,
            now,
        );
        assert!(
            matches!(&out[0], Out::Joined { joined, .. } if joined.mode == Mode::Sfu),
            "{out:?}"
        );
        execute(
            &mut rooms,
            ev(&m, "join", join("mesh", "mesh"), Some(1)),
            &mut ids,
            now,
        );
        let offer = vec![json!({"sdp": "v=0"})];
        let out = execute(
            &mut rooms,
            ev(&a, "sfu-join", offer.clone(), Some(2)),
            &mut ids,
            now,
        );
        assert_eq!(
            out,
            [Out::Sfu {
                to: a.clone(),
                ack: Some(2),
                op: SfuOp::Join {
                    room: "s".into(),
                    pid: "p1".into(),
                    sdp: "v=0".into()
                }
            }]
        );
        let out = execute(
            &mut rooms,
            ev(&m, "sfu-join", offer, Some(2)),
            &mut ids,
            now,
        );
        assert!(
            matches!(&out[0], Out::Ack { args, .. } if args[0]["error"] == "this room does not use the SFU"),
            "{out:?}"
        );
        let out = execute(
            &mut rooms,
            ev(&a, "join", join("x", "fast"), Some(3)),
            &mut ids,
            now,
        );
        assert!(
            matches!(&out[0], Out::Ack { args, .. } if args[0]["error"].as_str().unwrap().starts_with("mode must be"))
        );
        // Leaving an SFU room ends the SFU session; leaving a mesh does not involve the SFU.
        let out = execute(
            &mut rooms,
            ev(&a, "leave", vec![json!({})], None),
            &mut ids,
            now,
        );
        assert_eq!(
            out,
            [Out::Sfu {
                to: Endpoint::nobody(),
                ack: None,
                op: SfuOp::Leave {
                    room: "s".into(),
                    pid: "p1".into()
                }
            }]
        );
        let out = execute(
            &mut rooms,
            ev(&m, "leave", vec![json!({})], None),
            &mut ids,
            now,
        );
        assert!(out.iter().all(|o| !matches!(o, Out::Sfu { .. })), "{out:?}");
    }

    fn ev(from: &Endpoint, event: &str, args: Vec<Value>, ack: Option<u64>) -> Op {
        Op::Event {
            from: from.clone(),
            event: event.into(),
            args,
            ack,
        }
    }

    #[test]
    fn a_join_answers_then_announces_across_nodes() {
        let mut rooms = Rooms::new(Limits::default());
        let mut ids = counter();
        let t = Instant::now();
        let (a, b) = (ep("n1", "a"), ep("n2", "b"));
        execute(
            &mut rooms,
            ev(
                &a,
                "join",
                vec![json!({"room": "r", "name": "Ann"})],
                Some(1),
            ),
            &mut ids,
            t,
        );
        let out = execute(
            &mut rooms,
            ev(
                &b,
                "join",
                vec![json!({"room": "r", "name": "Ben"})],
                Some(7),
            ),
            &mut ids,
            t,
        );
        assert!(
            matches!(&out[0], Out::Joined { to, ack: Some(7), joined, .. } if *to == b && joined.participants == vec![("p1".to_owned(), "Ann".to_owned())])
        );
        assert_eq!(
            out[1],
            Out::Event {
                to: a.clone(),
                event: Event::ParticipantJoined {
                    id: "p2".into(),
                    name: "Ben".into()
                }
            }
        );
        let out = execute(
            &mut rooms,
            ev(&a, "signal", vec![json!({"to": "p2", "data": 5})], Some(2)),
            &mut ids,
            t,
        );
        assert_eq!(
            out,
            vec![
                Out::Event {
                    to: b.clone(),
                    event: Event::Signal {
                        from: "p1".into(),
                        data: json!(5).into()
                    }
                },
                Out::Ack {
                    to: a.clone(),
                    ack: 2,
                    args: vec![json!({"ok": true})]
                },
            ]
        );
    }

    #[test]
    fn refusals_go_by_ack_or_as_an_error_event() {
        let mut rooms = Rooms::new(Limits::default());
        let mut ids = counter();
        let t = Instant::now();
        let a = ep("n1", "a");
        let out = execute(
            &mut rooms,
            ev(&a, "chat", vec![json!({"text": "x"})], Some(3)),
            &mut ids,
            t,
        );
        assert_eq!(
            out,
            vec![Out::Ack {
                to: a.clone(),
                ack: 3,
                args: vec![json!({"error": "join a room first"})]
            }]
        );
        let out = execute(&mut rooms, ev(&a, "dance", vec![], None), &mut ids, t);
        assert_eq!(
            out,
            vec![Out::Emit {
                to: a.clone(),
                event: "error".into(),
                body: Some(json!({"reason": "unknown event", "event": "dance"}))
            }]
        );
    }

    #[test]
    fn a_resume_on_another_node_gets_the_backlog_before_its_first_answer() {
        let mut rooms = Rooms::new(Limits::default());
        let mut ids = counter();
        let t = Instant::now();
        let (a, b, b2) = (ep("n1", "a"), ep("n1", "b"), ep("n2", "b2"));
        execute(
            &mut rooms,
            ev(&a, "join", vec![json!({"room": "r", "name": "Ann"})], None),
            &mut ids,
            t,
        );
        execute(
            &mut rooms,
            ev(&b, "join", vec![json!({"room": "r", "name": "Ben"})], None),
            &mut ids,
            t,
        );
        execute(&mut rooms, Op::Detach { from: b.clone() }, &mut ids, t);
        execute(
            &mut rooms,
            ev(
                &a,
                "signal",
                vec![json!({"to": "p2", "data": "away"})],
                None,
            ),
            &mut ids,
            t,
        );
        execute(
            &mut rooms,
            Op::Attach {
                from: b2.clone(),
                token: "t2".into(),
            },
            &mut ids,
            t,
        );
        // Its first event arrives before the connect handler's activate.
        let out = execute(
            &mut rooms,
            ev(&b2, "chat", vec![json!({"text": "back"})], Some(1)),
            &mut ids,
            t,
        );
        assert!(
            matches!(&out[0], Out::Joined { to, event, joined, .. } if *to == b2 && event == "resumed" && joined.you == "p2")
        );
        assert_eq!(
            out[1],
            Out::Event {
                to: b2.clone(),
                event: Event::Signal {
                    from: "p1".into(),
                    data: json!("away").into()
                }
            }
        );
        assert!(matches!(&out[2], Out::Event { to, event: Event::Chat { .. } } if *to == a));
        assert!(
            execute(
                &mut rooms,
                Op::Activate {
                    from: b2.clone(),
                    tried: true
                },
                &mut ids,
                t
            )
            .is_empty()
        );
        // A token that takes nothing: resume-failed.
        let c = ep("n2", "c");
        execute(
            &mut rooms,
            Op::Attach {
                from: c.clone(),
                token: "nope".into(),
            },
            &mut ids,
            t,
        );
        let out = execute(
            &mut rooms,
            Op::Activate {
                from: c.clone(),
                tried: true,
            },
            &mut ids,
            t,
        );
        assert_eq!(
            out,
            vec![Out::Emit {
                to: c,
                event: "resume-failed".into(),
                body: Some(json!({}))
            }]
        );
    }

    #[test]
    fn ops_and_outs_cross_nodes_as_json() {
        let op = ev(
            &ep("n1", "a"),
            "offer",
            vec![json!({"sdp": "x"}), json!("room")],
            None,
        );
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), op);
        let ev = Out::Event {
            to: ep("n1", "a"),
            event: Event::Relay {
                event: CompatEvent::Ice,
                payload: json!({"c": 1}).into(),
            },
        };
        assert_eq!(
            serde_json::from_str::<Out>(&serde_json::to_string(&ev).unwrap()).unwrap(),
            ev
        );
        let out = Out::Joined {
            to: ep("n2", "b"),
            ack: Some(1),
            event: "joined".into(),
            joined: JoinedWire {
                you: "p".into(),
                resume: "t".into(),
                room: "r".into(),
                participants: vec![],
                mode: Mode::Sfu,
            },
        };
        assert_eq!(
            serde_json::from_str::<Out>(&serde_json::to_string(&out).unwrap()).unwrap(),
            out
        );
    }
}
