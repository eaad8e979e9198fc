// The page's signaling module (web-demo/signaling.js) in node, on the real socket.io-client
// (the npm package the page's bundle is vendored from) against a real `natpass serve`: what the
// page queues before the socket is up is delivered after the join; after a dropped connection
// what is queued goes out after the resume, as the same identity, in order, and what was sent
// to it meanwhile arrives after the resume answer; when the identity is lost (an unknown
// token, a restarted server) the old identity's signals are dropped but chat is kept; the
// outbox keeps the pace served at /api/config; a message larger than the server takes is
// refused locally; a full room, a room closed by the operator; stop() leaves and never comes
// back. The flows run once with the default transports (polling, then the WebSocket upgrade)
// and once with long-polling only.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { io as realIo } from 'socket.io-client';
import { Signaling } from '../../web-demo/signaling.js';
import { loadConfig } from '../../web-demo/config.js';
import { startNatpass, waitFor, sleep, freePort } from './lib.mjs';

let roomSeq = 0;
const freshRoom = () => `sig-${process.pid}-${++roomSeq}`;

/** Every client a test made, stopped after it (each holds a socket and timers). */
const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

/**
 * A page's Signaling on the real socket.io-client, set up as web-demo/app.js's connect() does
 * (the resume token kept from the last join answer), with what it does written down: every
 * emit on its socket, every message and join answer it hands to the page, its connects.
 * `c.gate`, when set to a promise, holds back the socket's connect packet until it settles
 * (the Engine.IO connection opens, the Socket.IO session waits).
 */
function client(server, { room, name = 'Ann', transports }) {
  const c = {
    me: null, resume: undefined, gate: null,
    joined: [], messages: [], emitted: [], states: [], timeline: [],
    connects: 0, reconnectAttempts: 0, disconnects: [], sockets: [],
  };
  const io = (url, opts) => {
    const auth = opts.auth;
    // forceNew: several pages in one process must not share one Engine.IO connection.
    const s = realIo(url, {
      ...opts,
      forceNew: true,
      auth: (cb) => (c.gate ? c.gate.then(() => auth(cb)) : auth(cb)),
    });
    const emit = s.emit.bind(s);
    s.emit = (type, ...args) => {
      c.emitted.push({ type, body: args[0], connected: s.connected, connect: c.connects, at: Date.now() });
      return emit(type, ...args);
    };
    s.on('connect', () => { c.connects += 1; });
    s.on('disconnect', (reason) => c.disconnects.push(reason));
    s.io.on('reconnect_attempt', () => { c.reconnectAttempts += 1; });
    c.sockets.push(s);
    return s;
  };
  c.sig = new Signaling({
    url: server.np.base,
    transports,
    pacing: server.config.pacing,
    maxMessage: server.config.maxMessage,
    io,
    joinRequest: () => ({ type: 'join', room, name, resume: c.resume }),
    onJoined: (m, resumed) => {
      c.me = m.you;
      c.resume = m.resume;
      c.joined.push({ you: m.you, resumed, participants: m.participants.map((p) => p.id) });
      c.timeline.push(resumed ? 'resumed' : 'joined');
    },
    onMessage: (m) => {
      c.messages.push({ ...m, at: Date.now() });
      c.timeline.push(m.type);
    },
    onState: (st) => c.states.push(st),
  });
  c.of = (type) => c.messages.filter((m) => m.type === type);
  c.errors = () => c.of('error');
  c.ready = (what = `${name} ready`) => waitFor(what, () => c.sig.state === 'ready' && c.me, 10000, 20);
  c.close = () => {
    if (c.sig.state !== 'stopped') c.sig.stop();
    for (const s of c.sockets) s.close();
  };
  clients.push(c);
  return c;
}

/** Two joined pages in one fresh room: Ann (`a`) and Ben (`b`), Ben first. */
async function pair(server, opts = {}) {
  const room = freshRoom();
  const b = client(server, { room, name: 'Ben', ...opts });
  b.sig.start();
  await b.ready('Ben joined');
  const a = client(server, { room, name: 'Ann', ...opts });
  a.sig.start();
  await a.ready('Ann joined');
  await waitFor('Ben sees Ann', () => b.of('participant-joined').some((m) => m.participant.id === a.me), 10000, 20);
  return { a, b, room };
}

const signalsFrom = (c, from) => c.of('signal').filter((m) => m.from === from);

/** A server and the page rules it serves, for a describe block (`args`: flags, or a function making them). */
function serverFor(args = []) {
  const server = { np: null, config: null };
  before(async () => {
    server.np = await startNatpass(typeof args === 'function' ? await args() : args);
    server.config = await loadConfig((path, o) => fetch(server.np.base + path, o));
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    if (server.np) await server.np.stop();
  });
  return server;
}

for (const [label, transports] of [['polling + websocket', undefined], ['polling only', ['polling']]]) {
  describe(`signaling over ${label}`, () => {
    const server = serverFor();

    test('messages queued before the socket is connected are delivered after the join, not dropped', async () => {
      const room = freshRoom();
      const b = client(server, { room, name: 'Ben', transports });
      b.sig.start();
      await b.ready();
      const a = client(server, { room, name: 'Ann', transports });
      a.sig.start();
      assert.notEqual(a.sig.state, 'ready');
      assert.ok(a.sig.send({ type: 'chat', text: 'early' }));
      assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { n: 1 } }));
      assert.equal(a.sig.pending(), 2, 'kept in the outbox while not connected');
      assert.equal(a.emitted.length, 0, 'nothing emitted before the socket is up');
      await a.ready();
      await waitFor('Ben gets the early chat and signal', () => b.of('chat').length === 1 && signalsFrom(b, a.me).length === 1, 10000, 20);
      assert.equal(b.of('chat')[0].text, 'early');
      assert.equal(b.of('chat')[0].from, a.me);
      assert.deepEqual(signalsFrom(b, a.me)[0].data, { n: 1 });
      assert.deepEqual(a.emitted.map((e) => e.type), ['join', 'chat', 'signal'], 'the join first, then the outbox in order');
      assert.ok(a.emitted.every((e) => e.connected), 'every emit on a connected socket (none left to the library\'s buffer)');
      assert.deepEqual(a.errors(), [], 'the server refused nothing (a message before the join gets "join a room first")');
      assert.equal(a.sig.pending(), 0);
      assert.deepEqual(a.states, ['connecting', 'joining', 'ready']);
      // Messages other than the join answer reach the page.
      assert.ok(b.of('participant-joined').some((m) => m.participant.id === a.me && m.participant.name === 'Ann'));
      if (transports) assert.equal(a.sig.transport(), 'polling');
      else await waitFor('the upgrade to WebSocket', () => a.sig.transport() === 'websocket', 10000, 20);
    });

    test('after a connection drop, queued signals go out after the resume as the same identity, in order', async () => {
      const { a, b } = await pair(server, { transports });
      const me = a.me;
      a.sig.drop();
      assert.notEqual(a.sig.state, 'ready', 'the drop is seen at once');
      const before = a.emitted.length;
      for (let i = 0; i < 5; i++) assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { seq: i } }));
      assert.ok(a.sig.send({ type: 'chat', text: 'back' }));
      await waitFor('Ben gets the queued signals', () => signalsFrom(b, me).length === 5 && b.of('chat').length === 1, 15000, 20);
      assert.deepEqual(signalsFrom(b, me).map((m) => m.data.seq), [0, 1, 2, 3, 4], 'in order, from the same identity');
      assert.equal(b.of('chat')[0].from, me);
      assert.equal(a.connects, 2, 'one reconnect');
      assert.equal(a.me, me);
      assert.deepEqual(a.joined.at(-1), { you: me, resumed: true, participants: [b.me] }, 'resumed, Ben still there');
      assert.deepEqual(a.states.slice(-3), ['closed', 'joining', 'ready']);
      const after = a.emitted.slice(before);
      assert.deepEqual(after.map((e) => e.type), ['signal', 'signal', 'signal', 'signal', 'signal', 'chat'],
        'no fresh join: the identity came back through the handshake');
      assert.ok(after.every((e) => e.connect === 2 && e.connected), 'everything went out on the new socket');
      assert.deepEqual(a.errors(), []);
      assert.equal(b.of('participant-left').length, 0, 'Ben never saw Ann leave');
      assert.equal(b.of('participant-joined').filter((m) => m.participant.id !== me).length, 0, 'nor a new Ann');
      if (transports) assert.equal(a.sig.transport(), 'polling');
    });

    test('what is still in the outbox when the connection drops goes out after the resume, in order', async () => {
      const { a, b } = await pair(server, { transports });
      const me = a.me;
      const n = server.config.pacing.burst + 10;
      for (let i = 0; i < n; i++) assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { seq: i } }));
      assert.ok(a.sig.pending() >= 5, `some wait for the pace (${a.sig.pending()} pending)`);
      a.sig.drop();
      await waitFor('Ben gets every signal', () => signalsFrom(b, me).length === n, 15000, 20);
      assert.deepEqual(signalsFrom(b, me).map((m) => m.data.seq), [...Array(n).keys()], 'none lost, none twice, in order');
      assert.equal(a.connects, 2, 'over a reconnect');
      assert.deepEqual(a.joined.at(-1).resumed, true);
      assert.deepEqual(a.errors(), []);
    });

    test('what was sent to a participant while it was away arrives after its resume answer, in order', async () => {
      const { a, b } = await pair(server, { transports });
      const me = a.me;
      // Ann's new socket opens but its connect packet waits: Ann is away meanwhile.
      let release;
      a.gate = new Promise((r) => { release = r; });
      a.sig.drop();
      await sleep(300); // the server has seen the old socket close
      for (let i = 0; i < 5; i++) assert.ok(b.sig.send({ type: 'signal', to: me, data: { seq: i } }));
      assert.ok(b.sig.send({ type: 'chat', text: 'while you were away' }));
      await waitFor('Ben sent it all', () => b.sig.pending() === 0, 5000, 20);
      await sleep(300);
      assert.equal(signalsFrom(a, b.me).length, 0, 'nothing reached Ann while away');
      const mark = a.timeline.length;
      release();
      await waitFor('Ann gets the backlog', () => signalsFrom(a, b.me).length === 5 && a.of('chat').length === 1, 10000, 20);
      assert.equal(a.me, me);
      assert.deepEqual(a.timeline.slice(mark), ['resumed', 'signal', 'signal', 'signal', 'signal', 'signal', 'chat'],
        'the resume answer first, then the backlog in order');
      assert.deepEqual(signalsFrom(a, b.me).map((m) => m.data.seq), [0, 1, 2, 3, 4]);
      assert.deepEqual(b.errors(), [], 'Ben\'s signals to the absent Ann were taken');
      assert.deepEqual(a.errors(), []);
    });

    test('the ice-servers answer reaches the page', async () => {
      const { a } = await pair(server, { transports });
      assert.ok(a.sig.send({ type: 'ice-servers' }));
      const m = await waitFor('ice-servers answer', () => a.of('ice-servers')[0], 10000, 20);
      assert.ok(Array.isArray(m.iceServers) && m.iceServers.length > 0, JSON.stringify(m));
      assert.ok(m.ttl > 0);
    });

    test('with a token the server no longer knows, queued signals of the old identity are dropped but chat is kept', async () => {
      const { a, b } = await pair(server, { transports });
      const old = a.me;
      // The token is gone on the server (as after its grace period): the resume fails. (So is
      // the join key's identity then; a fresh key stands for that here, since the old one would
      // still name the identity the server has kept.)
      a.resume = 'f'.repeat(32);
      a.sig.joinKey = 'e'.repeat(32);
      a.sig.drop();
      const before = a.emitted.length;
      // Ben is still there under the same id: a stale signal sent anyway would reach him.
      assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { stale: true } }));
      assert.ok(a.sig.send({ type: 'chat', text: 'still here' }));
      await waitFor('Ann joined afresh', () => a.joined.length === 2 && a.sig.state === 'ready', 15000, 20);
      assert.notEqual(a.me, old, 'a new identity');
      assert.equal(a.joined[1].resumed, false);
      await waitFor('Ben gets the chat from the new Ann', () => b.of('chat').length === 1, 10000, 20);
      assert.equal(b.of('chat')[0].from, a.me);
      assert.equal(b.of('chat')[0].text, 'still here');
      // The chat went out after the signal would have: had the signal been sent, it is in by now.
      await sleep(300);
      assert.deepEqual(b.of('signal'), [], 'the old identity\'s signal never reached Ben');
      assert.deepEqual(a.emitted.slice(before).map((e) => e.type), ['join', 'chat']);
      assert.equal(a.sig.pending(), 0);
      assert.deepEqual(a.errors(), []);
    });

    test('a message larger than the server accepts is refused locally and the socket stays up', async () => {
      const { a, b } = await pair(server, { transports });
      const max = server.config.maxMessage;
      const warn = console.warn;
      console.warn = () => {};
      let results;
      try {
        // As the old check measured it: exactly the limit in characters of the body. The
        // event on the wire (event name, framing) is larger than the limit.
        const pad = max - JSON.stringify({ to: b.me, data: { blob: '' } }).length;
        const atLimit = { type: 'signal', to: b.me, data: { blob: 'x'.repeat(pad) } };
        assert.equal(JSON.stringify({ to: atLimit.to, data: atLimit.data }).length, max);
        // Under the limit in characters, over it in UTF-8 bytes.
        const wide = { type: 'signal', to: b.me, data: { blob: 'é'.repeat(Math.ceil(max * 0.6)) } };
        results = [a.sig.send(atLimit), a.sig.send(wide)];
      } finally {
        console.warn = warn;
      }
      assert.deepEqual(results, [false, false], 'both refused by send()');
      // The largest message send() takes (found on a Signaling that is never started, so
      // nothing is sent) goes through, between two small ones that share its poll request.
      const probe = new Signaling({ url: server.np.base, pacing: server.config.pacing, maxMessage: max, io: () => assert.fail('never started') });
      const takes = (n) => probe.send({ type: 'signal', to: b.me, data: { blob: 'y'.repeat(n) } });
      let lo = 0;
      let hi = max;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (takes(mid)) lo = mid; else hi = mid;
      }
      assert.ok(lo > max - 100, `send() takes messages up to near the limit (blob of ${lo} bytes, limit ${max})`);
      const fits = 'y'.repeat(lo);
      assert.ok(a.sig.send({ type: 'chat', text: 'before' }));
      assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { blob: fits } }));
      assert.ok(a.sig.send({ type: 'chat', text: 'after' }));
      await waitFor('Ben gets the large signal and the chats', () => b.of('chat').length === 2, 10000, 20);
      assert.deepEqual(b.of('chat').map((m) => m.text), ['before', 'after']);
      assert.equal(signalsFrom(b, a.me).length, 1);
      assert.equal(signalsFrom(b, a.me)[0].data.blob, fits);
      assert.equal(a.connects, 1, 'the socket stayed up');
      assert.deepEqual(a.disconnects, []);
      assert.equal(a.sig.state, 'ready');
      assert.deepEqual(a.errors(), []);
    });

    test('stop() sends the leave (the other side sees participant-left) and never reconnects', async () => {
      const { a, b } = await pair(server, { transports });
      const me = a.me;
      a.sig.stop({ type: 'leave' });
      assert.equal(a.sig.state, 'stopped');
      // Well inside the 20 s grace period: only the leave explains it.
      await waitFor('Ben sees Ann leave', () => b.of('participant-left').some((m) => m.id === me), 5000, 20);
      assert.equal(a.emitted.at(-1).type, 'leave');
      assert.equal(a.sig.send({ type: 'chat', text: 'too late' }), false);
      await sleep(1500);
      assert.equal(a.connects, 1);
      assert.equal(a.reconnectAttempts, 0, 'no reconnect');
      assert.equal(a.sig.state, 'stopped');
    });

    test('stop() while reconnecting never reconnects', async () => {
      const { a } = await pair(server, { transports });
      a.sig.drop();
      a.sig.stop({ type: 'leave' });
      assert.equal(a.sig.state, 'stopped');
      await sleep(1500);
      assert.equal(a.connects, 1, 'no new socket');
      assert.ok(a.sockets.every((s) => !s.connected && !s.active));
    });
  });
}

describe('signaling into a full room', () => {
  const server = serverFor(['--room-size', '2', '--sfu', 'false']);

  test('a join refused as "room full" reaches the page as an error and the socket stays up', async () => {
    const { room } = await pair(server);
    const c = client(server, { room, name: 'Cy' });
    c.sig.start();
    const e = await waitFor('room full', () => c.errors()[0], 10000, 20);
    assert.equal(e.reason, 'room full');
    assert.equal(c.me, null);
    assert.notEqual(c.sig.state, 'ready');
    assert.ok(c.sig.send({ type: 'chat', text: 'queued' }), 'still kept for a later join');
    assert.equal(c.emitted.filter((x) => x.type === 'chat').length, 0, 'and not sent without a room');
  });
});

describe('signaling when the operator closes the room', () => {
  const token = 'admin-token-for-the-signaling-test';
  const admin = { port: 0 };
  const server = serverFor(async () => {
    admin.port = await freePort();
    return ['--admin-listen', `127.0.0.1:${admin.port}`, '--admin-token', token];
  });
  const closeRoom = async (room) => {
    const r = await fetch(`http://127.0.0.1:${admin.port}/admin/rooms/${room}`, {
      method: 'DELETE', headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, 200, await r.text());
  };

  test('room-closed reaches the page; a page that stops on it (as app.js does) never comes back', async () => {
    const { a, b, room } = await pair(server);
    for (const c of [a, b]) {
      const onMessage = c.sig.onMessage;
      c.sig.onMessage = (m) => { onMessage(m); if (m.type === 'room-closed') c.sig.stop(); };
    }
    await closeRoom(room);
    await waitFor('both told', () => a.of('room-closed').length === 1 && b.of('room-closed').length === 1, 5000, 20);
    await sleep(1500);
    assert.equal(a.sig.state, 'stopped');
    assert.equal(a.connects + b.connects, 2, 'no reconnect');
  });

  test('after the server closes the socket, the Signaling reconnects by itself and joins again', async () => {
    const { a, room } = await pair(server);
    const old = a.me;
    await closeRoom(room);
    await waitFor('a new identity in a new room', () => a.sig.state === 'ready' && a.joined.length === 2, 10000, 20);
    assert.ok(a.disconnects.includes('io server disconnect'), JSON.stringify(a.disconnects));
    assert.equal(a.connects, 2);
    assert.notEqual(a.me, old, 'the closed room\'s identity is gone');
  });
});

describe('signaling pace', () => {
  const server = serverFor();

  test('the outbox keeps the served pace: a burst, then the rate, nothing refused, in order', async () => {
    const { a, b } = await pair(server);
    const { rate, burst } = server.config.pacing;
    const n = burst + 3 * rate;
    const t0 = Date.now();
    for (let i = 0; i < n; i++) assert.ok(a.sig.send({ type: 'signal', to: b.me, data: { seq: i } }));
    const budget = ((n - burst) / rate) * 1000;
    await waitFor('Ben gets every signal', () => signalsFrom(b, a.me).length === n, budget + 10000, 20);
    const got = signalsFrom(b, a.me);
    assert.deepEqual(got.map((m) => m.data.seq), [...Array(n).keys()], 'all delivered, in order');
    assert.deepEqual(a.errors(), [], 'the server refused nothing ("rate limit: slow down")');
    const at = got.map((m) => m.at - t0);
    assert.ok(at[burst - 1] < 1000, `the burst goes out at once (burst done at ${at[burst - 1]} ms)`);
    // What follows the burst comes at the rate, not faster.
    const last = at[n - 1];
    assert.ok(last >= budget * 0.8, `the rest at ${rate}/s: last after ${last} ms, expected about ${budget}`);
    assert.ok(last <= budget + 3000, `and not much slower: last after ${last} ms`);
    for (let s = 1000; s + 1000 <= last; s += 250) {
      const inWindow = at.filter((t) => t >= s && t < s + 1000).length;
      // Some slack for a loaded machine; an unpaced sender puts everything in the first second.
      assert.ok(inWindow <= rate * 1.5, `${inWindow} in the second from ${s} ms (rate ${rate})`);
    }
  });

  test('control: the same messages without the outbox are refused by the server', async () => {
    // Proves that the test above can fail: an unpaced sender trips the server's bucket.
    const s = realIo(server.np.base, { transports: ['websocket'], forceNew: true, reconnection: false });
    try {
      const errors = [];
      s.on('error', (e) => errors.push(e));
      await waitFor('raw socket', () => s.connected, 10000, 20);
      const j = await s.timeout(5000).emitWithAck('join', { room: freshRoom(), name: 'Raw' });
      const { rate, burst } = server.config.pacing;
      for (let i = 0; i < burst + 3 * rate; i++) s.emit('signal', { to: j.you, data: { seq: i } });
      await waitFor('rate-limit errors', () => errors.some((e) => e.reason === 'rate limit: slow down'), 10000, 20);
    } finally {
      s.close();
    }
  });
});

describe('signaling across a server restart', () => {
  const server = serverFor();

  test('when the restart loses the identity, queued signals of the old identity are dropped but chat is kept', async () => {
    const { a, b } = await pair(server);
    const oldA = a.me;
    const oldB = b.me;
    // Ann's connect packet waits until Ben is back, so that Ben is there to get her chat.
    let release;
    a.gate = new Promise((r) => { release = r; });
    const { turnPort, httpPort } = server.np;
    await server.np.stop();
    await waitFor('both see the server go', () => a.sig.state !== 'ready' && b.sig.state !== 'ready', 10000, 20);
    const before = a.emitted.length;
    assert.ok(a.sig.send({ type: 'signal', to: oldB, data: { stale: true } }));
    assert.ok(a.sig.send({ type: 'chat', text: 'after the restart' }));
    server.np = await startNatpass([], { turnPort, httpPort });
    await waitFor('Ben joined afresh', () => b.joined.length === 2 && b.sig.state === 'ready', 20000, 20);
    assert.notEqual(b.me, oldB);
    release();
    await waitFor('Ann joined afresh', () => a.joined.length === 2 && a.sig.state === 'ready', 20000, 20);
    assert.notEqual(a.me, oldA);
    assert.equal(a.joined[1].resumed, false);
    await waitFor('Ben gets the chat', () => b.of('chat').length === 1, 10000, 20);
    assert.equal(b.of('chat')[0].from, a.me);
    await sleep(300);
    // A signal to the old Ben would have come back as "no such participant".
    assert.deepEqual(a.errors(), []);
    assert.deepEqual(b.of('signal'), []);
    assert.deepEqual(a.emitted.slice(before).map((e) => e.type), ['join', 'chat']);
  });
});
