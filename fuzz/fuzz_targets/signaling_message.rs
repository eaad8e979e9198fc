//! The room engine under any sequence of requests: arbitrary bytes become joins, resumes,
//! signals, chats, leaves, detaches and sweeps from a handful of connections. Nothing may panic,
//! and the engine's counts stay consistent with what it answers. (The Socket.IO framing in front
//! of it is socketioxide's.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use natpass::signal::{CompatEvent, FreshIds, JoinRequest, Limits, Rooms};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        room_size: 3,
        max_rooms: 4,
        buffer: 8,
        grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut rooms = Rooms::<u8>::new(limits);
    let t0 = Instant::now();
    let mut now = t0;
    let mut n = 0u32;
    for op in data.chunks(3) {
        let [a, b, c] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        let conn = b % 6;
        let room = ["a", "b", "c", "d", "e", "bad room"][(c % 6) as usize];
        n += 1;
        let ids = FreshIds { pid: format!("p{n}"), token: format!("t{n}") };
        let token = format!("t{}", c % 16);
        match a % 10 {
            0 => {
                let req = JoinRequest { room: room.into(), name: "x".repeat((c % 50) as usize), resume: (c & 1 == 1).then(|| token.clone()), key: (c & 2 == 2).then(|| format!("k{}", c % 4)), mode: None };
                let _ = rooms.join(conn, req, ids, now);
            }
            1 => {
                let _ = rooms.resume(conn, &token, now);
            }
            2 => {
                let _ = rooms.attach(conn, &token);
            }
            3 => {
                let _ = rooms.activate(&conn);
            }
            4 => {
                let _ = rooms.signal(&conn, &format!("p{}", c % 16), serde_json::json!(c));
            }
            5 => {
                let _ = rooms.chat(&conn, &"y".repeat(c as usize * 10));
            }
            6 => {
                let _ = rooms.leave(&conn);
            }
            7 => {
                let _ = rooms.detach(&conn, now);
            }
            8 => {
                now += Duration::from_millis(u64::from(c) * 20);
                let _ = rooms.sweep(now);
            }
            _ => {
                if c & 1 == 0 {
                    let _ = rooms.join_compat(conn, room, ids);
                } else {
                    let _ = rooms.relay_compat(&conn, room, CompatEvent::Ice, serde_json::json!(c));
                }
            }
        }
        let (r, p) = rooms.counts();
        assert!(r <= 4 && p <= 4 * 3);
    }
});
