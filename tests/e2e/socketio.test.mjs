// Signaling over Socket.IO with the real npm client (socket.io-client from node_modules, the
// same package the page's vendored bundle comes from), mostly without a browser: the natpass
// events with their acks over websocket and over polling only, the error reasons, resume after
// a dropped connection, the polling → websocket upgrade, the Zoom-clone compatibility events
// through an unmodified client script (zoomclone/app.js), the limits (Origin, payload size,
// rate, connections per IP, idle sessions, a receiver that stops reading), an operator closing a
// room, the served client bundle and no message bodies in the logs. Then the same Zoom-clone
// script in Chromium with real RTCPeerConnections, the main cases again with the participants
// on two natpass nodes sharing one Redis, and socket.io-client 3.x (npm alias
// socket.io-client-3) on each transport and through the upgrade.
import { test, describe, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import vm from 'node:vm';
import { io } from 'socket.io-client';
import { io as io3 } from 'socket.io-client-3';
import { startNatpass, launchChromium, freePort, repo, sleep, waitFor } from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const TRANSPORTS = { websocket: ['websocket'], polling: ['polling'] };
const FOREIGN = 'http://evil.example';

// Every client a test opens, closed after the file (a failed assertion must not leave sockets
// that keep the process or the server busy).
const opened = new Set();
after(() => {
  for (const s of opened) s.close();
});

let roomSeq = 0;
const uniqueRoom = (tag) => `${tag}-${process.pid}-${++roomSeq}`;

/** A socket.io-client socket to `base` sending the page's Origin (node sends none by itself). */
function client(base, { transports, auth, reconnection = false, origin = base, ...rest } = {}) {
  const s = io(base, {
    forceNew: true,
    transports,
    auth,
    reconnection,
    timeout: 5000,
    extraHeaders: { origin },
    ...rest,
  });
  opened.add(s);
  // Every natpass event this socket receives, in order (reserved events are not in it).
  s.log = [];
  s.onAny((event, ...args) => s.log.push([event, ...args]));
  // Why it was dropped, for failure messages.
  s.drops = [];
  s.on('disconnect', (reason) => s.drops.push(reason));
  return s;
}

function connected(s, ms = 10000) {
  if (s.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no connect within ' + ms + ' ms')), ms);
    s.once('connect', () => { clearTimeout(t); resolve(); });
    s.once('connect_error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** Emit with an ack callback; reject when no ack comes within `ms`. */
const ack = (s, event, arg = {}, ms = 5000) => s.timeout(ms).emitWithAck(event, arg);

/** Wait until `s` has received `event` satisfying `pred`; return its first argument. */
async function received(s, event, pred = () => true, ms = 5000) {
  const hit = await waitFor(`'${event}' at ${s.id}`, () => s.log.find(([e, a]) => e === event && pred(a)), ms, 25);
  return hit[1];
}

/** Nothing matching arrives at `s` for `ms`. */
async function notReceived(s, event, pred = () => true, ms = 500) {
  await sleep(ms);
  const hit = s.log.find(([e, a]) => e === event && pred(a));
  assert.equal(hit, undefined, `${event} arrived: ${JSON.stringify(hit)}`);
}

/** Connect and join `room` as `name`; the socket with its join ack. */
async function joined(base, transports, room, name, opts = {}) {
  const s = client(base, { transports, ...opts });
  await connected(s);
  const me = await ack(s, 'join', { room, name });
  assert.equal(me.ok, true, `join ${room} as ${name}: ${JSON.stringify(me)}`);
  return { s, me };
}

function assertIceServers(list) {
  assert.ok(Array.isArray(list) && list.length > 0, `iceServers: ${JSON.stringify(list)}`);
  for (const e of list) assert.ok(Array.isArray(e.urls) && e.urls.length > 0, JSON.stringify(e));
  const turn = list.find((e) => e.urls.some((u) => u.startsWith('turn:')));
  assert.ok(turn, `a TURN entry in ${JSON.stringify(list)}`);
  assert.equal(typeof turn.username, 'string');
  assert.equal(typeof turn.credential, 'string');
}

/**
 * One plain HTTP request on its own connection (no keep-alive pool that could count as a
 * connection afterwards): the status and body. `upgrade` makes it a WebSocket upgrade request.
 */
function rawRequest(base, path, { headers = {}, method = 'GET', body, upgrade = false, timeoutMs = 5000 } = {}) {
  const u = new URL(path, base);
  const h = { ...headers };
  if (upgrade) {
    Object.assign(h, {
      connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13',
      'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
    });
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent: false });
    const t = setTimeout(() => { req.destroy(); reject(new Error(`no answer to ${method} ${path}`)); }, timeoutMs);
    req.on('upgrade', (res, sock) => { clearTimeout(t); sock.destroy(); resolve({ status: res.statusCode, body: '' }); });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => { clearTimeout(t); resolve({ status: res.statusCode, body: Buffer.concat(chunks), headers: res.headers }); });
    });
    req.on('error', (e) => { clearTimeout(t); reject(e); });
    req.end(body);
  });
}

const HANDSHAKE = '/socket.io/?EIO=4&transport=polling';

/** A polling handshake: its status and, when it opened a session, the open packet. */
async function pollingHandshake(base, origin = base) {
  const r = await rawRequest(base, HANDSHAKE, { headers: origin ? { origin } : {} });
  const text = r.body.toString();
  let open = null;
  if (r.status === 200 && text.startsWith('0')) open = JSON.parse(text.slice(1));
  return { status: r.status, open };
}

/** Close a polling session opened by `pollingHandshake` (an Engine.IO close packet). */
async function closeSession(base, sid, origin = base) {
  await rawRequest(base, `${HANDSHAKE}&sid=${sid}`, {
    method: 'POST', body: '1', headers: { origin, 'content-type': 'text/plain;charset=UTF-8' },
  }).catch(() => { /* already gone */ });
}

/**
 * Socket.IO over long-polling by hand, for a client that does what socket.io-client never does:
 * stop reading. Engine.IO v4 payloads are packets joined by the record separator 0x1e.
 */
class RawPolling {
  static async open(base, auth) {
    const h = await pollingHandshake(base);
    assert.equal(h.status, 200, 'handshake');
    const raw = new RawPolling(base, h.open.sid);
    await raw.post([auth ? `40${JSON.stringify(auth)}` : '40']);
    const seen = [];
    for (let i = 0; i < 10 && !seen.some((p) => p.startsWith('40{')); i++) {
      const packets = await raw.poll();
      assert.ok(packets, 'session alive');
      seen.push(...packets);
    }
    assert.ok(seen.some((p) => p.startsWith('40{')), `connected: ${JSON.stringify(seen)}`);
    raw.backlog.push(...seen.filter((p) => !p.startsWith('40') && p !== '2'));
    return raw;
  }
  constructor(base, sid) {
    this.base = base;
    this.sid = sid;
    this.acks = 0;
    this.backlog = [];
  }
  get path() { return `${HANDSHAKE}&sid=${this.sid}`; }
  async post(packets) {
    const r = await rawRequest(this.base, this.path, {
      method: 'POST', body: packets.join('\x1e'), headers: { origin: this.base, 'content-type': 'text/plain;charset=UTF-8' },
    });
    return r.status;
  }
  /**
   * One GET: the packets it brought (answering pings), [] when nothing came within `waitMs`
   * (a long poll with nothing to say), or null when the session is gone.
   */
  async poll(waitMs = 5000) {
    let r;
    try {
      r = await rawRequest(this.base, this.path, { headers: { origin: this.base }, timeoutMs: waitMs });
    } catch (e) {
      if (/no answer/.test(e.message)) return [];
      throw e;
    }
    if (r.status !== 200) return null;
    const packets = r.body.toString().split('\x1e');
    if (packets.includes('2')) await this.post(['3']);
    return packets;
  }
  /** Emit `event` with an ack and poll until the ack comes; its first argument. */
  async call(event, arg) {
    const id = this.acks++;
    await this.post([`42${id}${JSON.stringify([event, arg])}`]);
    for (let i = 0; i < 20; i++) {
      const packets = await this.poll();
      assert.ok(packets, 'session alive');
      const hit = packets.find((p) => p.startsWith(`43${id}[`));
      this.backlog.push(...packets.filter((p) => p !== hit));
      if (hit) return JSON.parse(hit.slice(`43${id}`.length))[0];
    }
    throw new Error(`no ack for ${event}`);
  }
}

/** The natpass events in Socket.IO packets (`42["event",arg]`), as [event, arg]. */
const eventsIn = (packets) => packets.filter((p) => p.startsWith('42[')).map((p) => JSON.parse(p.slice(2)));

// ---------------------------------------------------------------------------------------------
// natpass events

describe('natpass events', () => {
  let np;
  before(async () => { np = await startNatpass(); });
  after(async () => { if (np) await np.stop(); });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: join, participant-joined, signal, chat, ice-servers and leave each answer with an ack`, async () => {
      const room = uniqueRoom('events');
      const ann = await joined(np.base, transports, room, 'Ann');
      assert.equal(ann.s.io.engine.transport.name, name);
      assert.equal(typeof ann.me.you, 'string');
      assert.ok(ann.me.you.length > 0);
      assert.equal(typeof ann.me.resume, 'string');
      assert.ok(ann.me.resume.length >= 16, 'resume token long enough not to be guessed');
      assert.equal(ann.me.room, room);
      assert.deepEqual(ann.me.participants, [], 'the first one in sees nobody');
      assertIceServers(ann.me.iceServers);
      assert.ok(Number.isFinite(ann.me.ttl) && ann.me.ttl > 0, `ttl ${ann.me.ttl}`);

      const bob = await joined(np.base, transports, room, 'Bob');
      assert.notEqual(bob.me.you, ann.me.you);
      assert.notEqual(bob.me.resume, ann.me.resume);
      assert.deepEqual(bob.me.participants, [{ id: ann.me.you, name: 'Ann' }], 'the others, without oneself');
      assert.deepEqual(await received(ann.s, 'participant-joined'), { id: bob.me.you, name: 'Bob' });
      assert.equal(bob.s.log.find(([e]) => e === 'participant-joined'), undefined, 'no participant-joined for oneself');

      const data = { session: 3, description: { type: 'offer', sdp: 'v=0\r\n' }, candidates: [] };
      assert.deepEqual(await ack(ann.s, 'signal', { to: bob.me.you, data }), { ok: true });
      assert.deepEqual(await received(bob.s, 'signal'), { from: ann.me.you, data });

      // A burst keeps its order (a candidate never overtakes its description).
      const burst = Array.from({ length: 50 }, (_, n) => ack(ann.s, 'signal', { to: bob.me.you, data: { n } }));
      for (const a of await Promise.all(burst)) assert.deepEqual(a, { ok: true });
      await waitFor('the burst', () => bob.s.log.filter(([e, m]) => e === 'signal' && 'n' in m.data).length === 50, 5000, 25);
      assert.deepEqual(bob.s.log.filter(([e, m]) => e === 'signal' && 'n' in m.data).map(([, m]) => m.data.n),
        Array.from({ length: 50 }, (_, n) => n), 'signals arrive in the order sent');

      assert.deepEqual(await ack(bob.s, 'chat', { text: 'hello Ann' }), { ok: true });
      assert.deepEqual(await received(ann.s, 'chat'), { from: bob.me.you, name: 'Bob', text: 'hello Ann' });

      const ice = await ack(ann.s, 'ice-servers', {});
      assert.equal(ice.ok, true);
      assertIceServers(ice.iceServers);
      assert.ok(ice.ttl > 0);

      assert.deepEqual(await ack(bob.s, 'leave', {}), { ok: true });
      assert.deepEqual(await received(ann.s, 'participant-left'), { id: bob.me.you });
      assert.deepEqual(await ack(bob.s, 'chat', { text: 'still here?' }), { error: 'join a room first' });
      // The seat is free and the socket may join again, as a new participant.
      const again = await ack(bob.s, 'join', { room, name: 'Bob' });
      assert.equal(again.ok, true);
      assert.notEqual(again.you, bob.me.you);
      assert.deepEqual(await received(ann.s, 'participant-joined', (p) => p.id === again.you), { id: again.you, name: 'Bob' });
    });

    test(`${name}: refused events answer with the reason`, async () => {
      const s = client(np.base, { transports });
      await connected(s);
      for (const event of ['signal', 'chat', 'leave']) {
        assert.deepEqual(await ack(s, event, { to: 'x', data: {}, text: 'x' }), { error: 'join a room first' }, event);
      }
      const badRoom = 'room must be 1-64 letters, digits, - or _';
      for (const room of ['', 'two words', 'x'.repeat(65), 'a/b', 'ü']) {
        assert.deepEqual(await ack(s, 'join', { room, name: 'Ann' }), { error: badRoom }, JSON.stringify(room));
      }
      assert.deepEqual(await ack(s, 'join', { name: 'Ann' }), { error: badRoom }, 'no room at all');
      const badName = 'name must be 1-40 printable characters';
      for (const name of ['', '   ', 'a\u0007b', 'line\nbreak']) {
        assert.deepEqual(await ack(s, 'join', { room: uniqueRoom('err'), name }), { error: badName }, JSON.stringify(name));
      }
      const room = uniqueRoom('err');
      const me = await ack(s, 'join', { room, name: 'x'.repeat(40) });
      assert.equal(me.ok, true, '40 characters are a name');
      assert.deepEqual(await ack(s, 'join', { room, name: 'Ann' }), { error: 'already joined' });
      assert.deepEqual(await ack(s, 'signal', { to: 'nobody', data: {} }), { error: 'no such participant' });
      for (const text of ['', 'x'.repeat(2001)]) {
        const r = await ack(s, 'chat', { text });
        assert.equal(typeof r.error, 'string', `chat of ${text.length} characters: ${JSON.stringify(r)}`);
      }
      assert.deepEqual(await ack(s, 'chat', { text: 'x'.repeat(2000) }), { ok: true });
    });

    test(`${name}: a signal never crosses rooms`, async () => {
      const ann = await joined(np.base, transports, uniqueRoom('here'), 'Ann');
      const cat = await joined(np.base, transports, uniqueRoom('there'), 'Cat');
      assert.deepEqual(await ack(ann.s, 'signal', { to: cat.me.you, data: { x: 1 } }), { error: 'no such participant' });
      assert.deepEqual(await ack(ann.s, 'signal', { to: ann.me.you, data: { x: 1 } }), { error: 'no such participant' }, 'nor goes to oneself');
      await notReceived(cat.s, 'signal');
    });

    test(`${name}: a refused event sent without an ack gets an error event naming it`, async () => {
      const s = client(np.base, { transports });
      await connected(s);
      s.emit('chat', { text: 'nobody to hear it' });
      assert.deepEqual(await received(s, 'error'), { reason: 'join a room first', event: 'chat' });
      await ack(s, 'join', { room: uniqueRoom('noack'), name: 'Ann' });
      s.emit('signal', { to: 'nobody', data: {} });
      assert.deepEqual(await received(s, 'error', (e) => e.event === 'signal'), { reason: 'no such participant', event: 'signal' });
      // An event that succeeds without an ack says nothing back.
      const mark = s.log.length;
      s.emit('chat', { text: 'fine' });
      await sleep(500);
      assert.deepEqual(s.log.slice(mark), []);
    });
  }

  test('the default transports upgrade from polling to websocket and signaling goes on', async () => {
    const room = uniqueRoom('upgrade');
    const s = client(np.base, {});
    assert.equal(s.io.engine.transport.name, 'polling', 'the session starts on polling');
    await connected(s);
    const me = await ack(s, 'join', { room, name: 'Ann' });
    assert.equal(me.ok, true);
    await waitFor('the upgrade to websocket', () => s.io.engine.transport.name === 'websocket', 10000, 50);
    const bob = await joined(np.base, TRANSPORTS.polling, room, 'Bob');
    assert.deepEqual(await received(s, 'participant-joined'), { id: bob.me.you, name: 'Bob' });
    assert.deepEqual(await ack(bob.s, 'signal', { to: me.you, data: { after: 'upgrade' } }), { ok: true });
    assert.deepEqual(await received(s, 'signal'), { from: bob.me.you, data: { after: 'upgrade' } });
    assert.deepEqual(await ack(s, 'signal', { to: bob.me.you, data: { over: 'websocket' } }), { ok: true });
    assert.deepEqual(await received(bob.s, 'signal'), { from: me.you, data: { over: 'websocket' } });
  });
});

// ---------------------------------------------------------------------------------------------
// Resume

describe('resume', () => {
  let np;
  before(async () => { np = await startNatpass(); });
  after(async () => { if (np) await np.stop(); });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: a dropped participant reconnecting with its token gets resumed, then what was sent to it meanwhile, and what it sent offline is delivered as itself`, async () => {
      const room = uniqueRoom('resume');
      let token = null;
      // The function form: evaluated again on every reconnect, as the page does.
      const ann = client(np.base, {
        transports,
        auth: (cb) => cb(token ? { resume: token } : {}),
        reconnection: true, reconnectionDelay: 1500, reconnectionDelayMax: 1500, randomizationFactor: 0,
      });
      await connected(ann);
      const me = await ack(ann, 'join', { room, name: 'Ann' });
      token = me.resume;
      const bob = await joined(np.base, transports, room, 'Bob');
      await received(ann, 'participant-joined');

      const dropped = new Promise((r) => ann.once('disconnect', r));
      ann.io.engine.close();
      await dropped;
      const mark = ann.log.length;
      await sleep(300); // let the server see the drop before Bob talks to Ann
      assert.deepEqual(await ack(bob.s, 'signal', { to: me.you, data: { n: 1 } }), { ok: true }, 'a participant in its grace period can be signalled');
      assert.deepEqual(await ack(bob.s, 'signal', { to: me.you, data: { n: 2 } }), { ok: true });
      assert.deepEqual(await ack(bob.s, 'chat', { text: 'are you back?' }), { ok: true });
      // Sent by Ann while disconnected: socket.io-client buffers it and sends it after connect.
      const offlineAck = ack(ann, 'signal', { to: bob.me.you, data: { from: 'offline' } }, 15000);
      ann.emit('chat', { text: 'sorry, lost you' });

      const resumed = await received(ann, 'resumed', () => true, 15000);
      assert.equal(resumed.you, me.you, 'the same identity');
      assert.equal(resumed.room, room);
      assert.deepEqual(resumed.participants, [{ id: bob.me.you, name: 'Bob' }]);
      assertIceServers(resumed.iceServers);
      assert.ok(resumed.ttl > 0);
      assert.equal(typeof resumed.resume, 'string');
      await waitFor('the backlog', () => ann.log.filter(([e]) => e === 'signal' || e === 'chat').length >= 3, 5000, 25);
      const since = ann.log.slice(mark).map(([e, a]) => [e, e === 'resumed' ? '…' : a]);
      assert.deepEqual(since.slice(0, 4), [
        ['resumed', '…'],
        ['signal', { from: bob.me.you, data: { n: 1 } }],
        ['signal', { from: bob.me.you, data: { n: 2 } }],
        ['chat', { from: bob.me.you, name: 'Bob', text: 'are you back?' }],
      ], 'resumed first, then the backlog in order');
      assert.equal(ann.log.find(([e]) => e === 'resume-failed'), undefined);

      assert.deepEqual(await offlineAck, { ok: true });
      assert.deepEqual(await received(bob.s, 'signal'), { from: me.you, data: { from: 'offline' } });
      assert.deepEqual(await received(bob.s, 'chat'), { from: me.you, name: 'Ann', text: 'sorry, lost you' });
      assert.equal(bob.s.log.find(([e]) => e === 'participant-left' || e === 'participant-joined'), undefined,
        'the others never saw Ann go and come back');
      // Still one participant: signals both ways keep working on the new socket.
      assert.deepEqual(await ack(bob.s, 'signal', { to: me.you, data: { n: 3 } }), { ok: true });
      await received(ann, 'signal', (m) => m.data.n === 3);

      // And it resumes again after a second drop, with the token it was given last.
      token = resumed.resume;
      const droppedAgain = new Promise((r) => ann.once('disconnect', r));
      ann.io.engine.close();
      await droppedAgain;
      const mark2 = ann.log.length;
      await sleep(300);
      assert.deepEqual(await ack(bob.s, 'signal', { to: me.you, data: { n: 4 } }), { ok: true });
      await waitFor('the second resume', () => ann.log.slice(mark2).some(([e]) => e === 'resumed'), 15000, 25);
      const second = ann.log.slice(mark2);
      assert.equal(second[0][0], 'resumed');
      assert.equal(second[0][1].you, me.you);
      assert.deepEqual(await received(ann, 'signal', (m) => m.data.n === 4), { from: bob.me.you, data: { n: 4 } });
      ann.close();
    });
  }

  test('a resume while the old socket still looks alive moves the participant to the new socket; the old one closing later changes nothing', async () => {
    const room = uniqueRoom('takeover');
    const ann = await joined(np.base, TRANSPORTS.websocket, room, 'Ann');
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    await received(ann.s, 'participant-joined');
    // A phone that changed networks: the old TCP connection is half-open, the client reconnects.
    const ann2 = client(np.base, { transports: TRANSPORTS.polling, auth: { resume: ann.me.resume } });
    await connected(ann2);
    const resumed = await received(ann2, 'resumed');
    assert.equal(resumed.you, ann.me.you);
    assert.deepEqual(resumed.participants, [{ id: bob.me.you, name: 'Bob' }]);
    const mark = ann.s.log.length;
    assert.deepEqual(await ack(bob.s, 'signal', { to: ann.me.you, data: { to: 'the new socket' } }), { ok: true });
    assert.deepEqual(await received(ann2, 'signal'), { from: bob.me.you, data: { to: 'the new socket' } });
    assert.deepEqual(ann.s.log.slice(mark), [], 'the old socket gets nothing any more');
    ann.s.close();
    await sleep(1000);
    assert.equal(bob.s.log.find(([e]) => e === 'participant-left'), undefined, 'the old socket closing is not a leave');
    assert.deepEqual(await ack(bob.s, 'signal', { to: ann.me.you, data: { still: 'there' } }), { ok: true });
    assert.deepEqual(await received(ann2, 'signal', (m) => m.data.still), { from: bob.me.you, data: { still: 'there' } });
    assert.deepEqual(await ack(ann2, 'chat', { text: 'from the new socket' }), { ok: true });
    assert.deepEqual(await received(bob.s, 'chat'), { from: ann.me.you, name: 'Ann', text: 'from the new socket' });
  });

  test('join with the resume token (instead of the handshake auth) takes the identity back with its backlog', async () => {
    const room = uniqueRoom('joinresume');
    const ann = await joined(np.base, TRANSPORTS.websocket, room, 'Ann');
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    ann.s.io.engine.close();
    await sleep(300);
    assert.deepEqual(await ack(bob.s, 'signal', { to: ann.me.you, data: { n: 'waiting' } }), { ok: true });
    const again = client(np.base, { transports: TRANSPORTS.polling });
    await connected(again);
    const me = await ack(again, 'join', { room, name: 'Ann', resume: ann.me.resume });
    assert.equal(me.ok, true, JSON.stringify(me));
    assert.equal(me.you, ann.me.you, 'the same identity');
    assert.deepEqual(me.participants, [{ id: bob.me.you, name: 'Bob' }]);
    assert.deepEqual(await received(again, 'signal'), { from: bob.me.you, data: { n: 'waiting' } });
    assert.equal(bob.s.log.find(([e]) => e === 'participant-left' || e === 'participant-joined'), undefined);
  });

  test('an unknown token gets resume-failed, the socket is in no room and may join afresh', async () => {
    const s = client(np.base, { transports: TRANSPORTS.websocket, auth: { resume: 'f'.repeat(32) } });
    await connected(s);
    assert.deepEqual(await received(s, 'resume-failed'), {});
    assert.equal(s.log.find(([e]) => e === 'resumed'), undefined);
    assert.deepEqual(await ack(s, 'chat', { text: 'hi' }), { error: 'join a room first' });
    assert.equal((await ack(s, 'join', { room: uniqueRoom('fresh'), name: 'Ann' })).ok, true);
  });

  test('a token given up by leave does not resume', async () => {
    const room = uniqueRoom('left');
    const ann = await joined(np.base, TRANSPORTS.websocket, room, 'Ann');
    assert.deepEqual(await ack(ann.s, 'leave', {}), { ok: true });
    ann.s.close();
    const again = client(np.base, { transports: TRANSPORTS.websocket, auth: { resume: ann.me.resume } });
    await connected(again);
    assert.deepEqual(await received(again, 'resume-failed'), {});
  });

  test('after the 20 s grace period the token has expired: the others get participant-left and a reconnect gets resume-failed', { timeout: 60000 }, async () => {
    const room = uniqueRoom('expired');
    const ann = await joined(np.base, TRANSPORTS.polling, room, 'Ann');
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    ann.s.io.engine.close();
    const droppedAt = Date.now();
    await sleep(15000);
    assert.equal(bob.s.log.find(([e]) => e === 'participant-left'), undefined, 'still inside the grace period at 15 s');
    assert.deepEqual(await received(bob.s, 'participant-left', () => true, 15000), { id: ann.me.you });
    const left = Date.now() - droppedAt;
    assert.ok(left >= 19000 && left <= 28000, `participant-left ${left} ms after the drop`);
    const back = client(np.base, { transports: TRANSPORTS.polling, auth: { resume: ann.me.resume } });
    await connected(back);
    assert.deepEqual(await received(back, 'resume-failed'), {});
    assert.deepEqual(await ack(back, 'signal', { to: bob.me.you, data: {} }), { error: 'join a room first' });
  });
});

// ---------------------------------------------------------------------------------------------
// The Zoom-clone compatibility set, through the unmodified client script

const ZOOM_SCRIPT = readFileSync(join(here, 'zoomclone', 'app.js'), 'utf8');

/** A stand-in for RTCPeerConnection: records what the script does and makes up SDP/candidates. */
class FakePeerConnection {
  static count = 0;
  constructor(config) {
    this.n = ++FakePeerConnection.count;
    this.config = config;
    this.listeners = {};
    this.localDescription = null;
    this.remoteDescription = null;
    this.sentCandidates = [];
    this.addedCandidates = [];
    this.tracks = 0;
  }
  addEventListener(type, f) { (this.listeners[type] ||= []).push(f); }
  fire(type, ev) { for (const f of this.listeners[type] || []) f(ev); }
  addTrack() { this.tracks += 1; }
  createDataChannel(label) { return { label, addEventListener() {} }; }
  async createOffer() { return { type: 'offer', sdp: `v=0\r\no=- ${this.n} 1 IN IP4 0.0.0.0\r\ns=offer\r\n` }; }
  async createAnswer() { return { type: 'answer', sdp: `v=0\r\no=- ${this.n} 1 IN IP4 0.0.0.0\r\ns=answer\r\n` }; }
  async setLocalDescription(d) {
    this.localDescription = d;
    // Gathering: two candidates, then the end-of-candidates event (candidate null), which the
    // script relays as it is.
    const candidates = [
      { candidate: `candidate:1 1 udp 2122260223 192.0.2.${this.n} 50000 typ host`, sdpMid: '0', sdpMLineIndex: 0 },
      { candidate: `candidate:2 1 udp 1686052607 198.51.100.${this.n} 50001 typ srflx raddr 0.0.0.0 rport 0`, sdpMid: '0', sdpMLineIndex: 0 },
      null,
    ];
    setTimeout(() => {
      for (const c of candidates) {
        this.sentCandidates.push(c);
        this.fire('icecandidate', { candidate: c });
      }
    }, 20);
  }
  async setRemoteDescription(d) {
    this.remoteDescription = d;
    setTimeout(() => this.fire('addstream', { stream: { id: `stream-${d.type}` } }), 0);
  }
  async addIceCandidate(c) { this.addedCandidates.push(c); }
}

function fakeElement() {
  return {
    hidden: false, srcObject: null, value: '', listeners: {},
    addEventListener(type, f) { (this.listeners[type] ||= []).push(f); },
    querySelector() { return null; },
  };
}

/**
 * A "browser tab" running zoomclone/app.js unchanged: its own vm context whose `io` is the real
 * socket.io-client (same-origin, as `io()` is on the page), with the DOM, getUserMedia and
 * RTCPeerConnection stood in for. The socket's incoming events and the arguments of every ack
 * are recorded around the script, not inside it.
 */
function zoomTab(base, transports) {
  const input = fakeElement();
  const form = fakeElement();
  form.querySelector = (q) => (q === 'input' ? input : null);
  const welcome = fakeElement();
  welcome.querySelector = (q) => (q === 'form' ? form : null);
  const elements = { myFace: fakeElement(), peerFace: fakeElement(), call: fakeElement(), welcome };
  const tab = { elements, acks: [], pcs: [], socket: null, logs: [] };
  const ioForPage = () => {
    const s = client(base, { transports, reconnection: false });
    const emit = s.emit.bind(s);
    s.emit = (event, ...args) => {
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        args[args.length - 1] = (...reply) => { tab.acks.push([event, reply]); last(...reply); };
      }
      return emit(event, ...args);
    };
    tab.socket = s;
    return s;
  };
  class PC extends FakePeerConnection {
    constructor(config) { super(config); tab.pcs.push(this); }
  }
  const context = vm.createContext({
    io: ioForPage,
    document: { getElementById: (id) => elements[id] || null },
    navigator: { mediaDevices: { getUserMedia: async () => ({ id: 'local', getTracks: () => [{ kind: 'audio' }, { kind: 'video' }] }) } },
    RTCPeerConnection: PC,
    console: { log: (...a) => tab.logs.push(a.join(' ')) },
    setTimeout, clearTimeout,
  });
  vm.runInContext(ZOOM_SCRIPT, context, { filename: join(here, 'zoomclone', 'app.js') });
  tab.submit = (room) => {
    input.value = room;
    for (const f of form.listeners.submit) f({ preventDefault() {} });
  };
  tab.joinedRoom = () => waitFor('join_room ack', () => tab.acks.find(([e]) => e === 'join_room'), 10000, 25);
  tab.pc = () => tab.pcs[0];
  tab.received = (event) => tab.socket.log.filter(([e]) => e === event);
  return tab;
}

/** Two tabs in `room` connected the Zoom-clone way: welcome → offer → answer, ice both ways. */
async function zoomCall(base, transports, room) {
  const first = zoomTab(base, transports);
  first.submit(room);
  assert.deepEqual(await first.joinedRoom(), ['join_room', []], 'join_room acked with no arguments');
  await waitFor('the room shown', () => first.elements.call.hidden === false, 5000, 25);
  const second = zoomTab(base, transports);
  second.submit(room);
  assert.deepEqual(await second.joinedRoom(), ['join_room', []]);
  await waitFor('offer and answer exchanged', () =>
    second.pc().remoteDescription && first.pc().remoteDescription, 10000, 25);
  await waitFor('all candidates relayed', () =>
    first.pc().addedCandidates.length === 3 && second.pc().addedCandidates.length === 3, 10000, 25);
  return { first, second };
}

describe('Zoom-clone compatibility (join_room, welcome, offer, answer, ice)', () => {
  let np;
  let small;
  before(async () => {
    np = await startNatpass();
    small = await startNatpass(['--room-size', '2', '--sfu', 'false']);
  });
  after(async () => {
    if (np) await np.stop();
    if (small) await small.stop();
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: the unmodified Zoom-clone script connects two tabs (welcome, offer, answer, ice as sent)`, async () => {
      const { first, second } = await zoomCall(np.base, transports, uniqueRoom('zoom'));
      assert.equal(first.socket.io.engine.transport.name, name);
      assert.equal(first.received('welcome').length, 1, 'the one already in gets welcome');
      assert.deepEqual(first.received('welcome')[0], ['welcome'], 'welcome has no arguments');
      assert.equal(second.received('welcome').length, 0, 'the joiner gets no welcome');
      assert.deepEqual(second.pc().remoteDescription, first.pc().localDescription, 'the offer arrives as sent');
      assert.deepEqual(first.pc().remoteDescription, second.pc().localDescription, 'the answer arrives as sent');
      assert.equal(first.pc().remoteDescription.type, 'answer');
      assert.deepEqual(second.pc().addedCandidates, first.pc().sentCandidates, 'candidates (and the final null) in order');
      assert.deepEqual(first.pc().addedCandidates, second.pc().sentCandidates);
      assert.equal(first.received('offer').length, 0, 'an offer goes to the others only');
      assert.equal(second.received('answer').length, 0, 'an answer goes to the others only');
      await waitFor('both remote streams shown', () => first.elements.peerFace.srcObject && second.elements.peerFace.srcObject, 5000, 25);
      assert.deepEqual(first.socket.log.filter(([e]) => e === 'error'), [], 'no error events');
      assert.deepEqual(second.socket.log.filter(([e]) => e === 'error'), []);
    });

    test(`${name}: compat rooms and natpass rooms of the same name never see each other`, async () => {
      const room = uniqueRoom('shared-name');
      const { first, second } = await zoomCall(np.base, transports, room);
      const ann = await joined(np.base, transports, room, 'Ann');
      assert.deepEqual(ann.me.participants, [], 'the natpass room of that name is empty');
      const third = zoomTab(np.base, transports);
      third.submit(room);
      assert.deepEqual(await third.joinedRoom(), ['join_room', []], 'a third compat tab fits (room size 8)');
      await waitFor('welcome for the compat tabs', () => first.received('welcome').length === 2 && second.received('welcome').length === 1, 5000, 25);
      // Relayed compat events never reach the natpass participant, and natpass chat never the tabs.
      const marked = { type: 'offer', sdp: 'v=0\r\ns=compat-only\r\n' };
      third.socket.emit('offer', marked, room);
      await ack(ann.s, 'chat', { text: 'anyone?' });
      const got = (t) => t.received('offer').some(([, p]) => p.sdp === marked.sdp);
      await waitFor('the offer at the other tabs', () => got(first) && got(second), 5000, 25);
      // Nor the other way round: a natpass participant's compat events for that room go nowhere.
      ann.s.emit('offer', { type: 'offer', sdp: 'from-natpass' }, room);
      ann.s.emit('ice', { candidate: 'from-natpass' }, room);
      await sleep(300);
      for (const t of [first, second, third]) {
        assert.ok(!t.socket.log.some((entry) => JSON.stringify(entry).includes('from-natpass')), 'natpass → compat relayed');
      }
      assert.deepEqual(ann.s.log.filter(([e]) => e !== 'error'), [], 'the natpass participant saw nothing of the compat room');
      for (const t of [first, second, third]) assert.deepEqual(t.received('chat'), []);
    });

    test(`${name}: offer, answer and ice are relayed only by a member of the named room`, async () => {
      const room = uniqueRoom('member');
      const { first, second } = await zoomCall(np.base, transports, room);
      const outsider = zoomTab(np.base, transports);
      outsider.submit(uniqueRoom('elsewhere'));
      await outsider.joinedRoom();
      const stranger = client(np.base, { transports });
      await connected(stranger);
      for (const s of [outsider.socket, stranger]) {
        s.emit('offer', { type: 'offer', sdp: 'intruder' }, room);
        s.emit('answer', { type: 'answer', sdp: 'intruder' }, room);
        s.emit('ice', { candidate: 'intruder' }, room);
      }
      await sleep(700);
      for (const t of [first, second]) {
        for (const e of ['offer', 'answer', 'ice']) {
          assert.ok(!t.received(e).some(([, p]) => JSON.stringify(p).includes('intruder')), `${e} from outside the room relayed`);
        }
      }
    });

    test(`${name}: a full compat room refuses join_room with {error:"room full"}, and a closed tab frees its seat silently`, async () => {
      const room = uniqueRoom('full');
      const { first, second } = await zoomCall(small.base, transports, room);
      const third = zoomTab(small.base, transports);
      third.submit(room);
      assert.deepEqual(await third.joinedRoom(), ['join_room', [{ error: 'room full' }]]);
      assert.equal(first.received('welcome').length, 1, 'no welcome for a refused join');
      const mark = first.socket.log.length;
      second.socket.close(); // the tab is closed: the Zoom clone has no leave event
      await sleep(700);
      assert.deepEqual(first.socket.log.slice(mark), [], 'the others get nothing when a tab goes');
      const fourth = zoomTab(small.base, transports);
      fourth.submit(room);
      assert.deepEqual(await fourth.joinedRoom(), ['join_room', []], 'the seat was freed');
      await waitFor('welcome for the newcomer', () => first.received('welcome').length === 2, 5000, 25);
    });
  }

  test('join_room without an ack into a full room gets an error event; a bad room name is refused', async () => {
    const room = uniqueRoom('fullnoack');
    await zoomCall(small.base, TRANSPORTS.websocket, room);
    const s = client(small.base, { transports: TRANSPORTS.websocket });
    await connected(s);
    s.emit('join_room', room);
    assert.deepEqual(await received(s, 'error'), { reason: 'room full', event: 'join_room' });
    // Compat room names: no rule stricter than the contract's, and at least nothing empty, over
    // 64 bytes or with control characters.
    for (const bad of ['', 'x'.repeat(65), 'a\nb']) {
      const t = client(small.base, { transports: TRANSPORTS.websocket });
      await connected(t);
      const r = await t.timeout(5000).emitWithAck('join_room', bad);
      assert.equal(typeof (r && r.error), 'string', `join_room(${JSON.stringify(bad)}) answered ${JSON.stringify(r)}`);
      t.close();
    }
  });

  test('a full natpass room refuses join with "room full" and takes the next one after a leave', async () => {
    const room = uniqueRoom('natfull');
    const ann = await joined(small.base, TRANSPORTS.websocket, room, 'Ann');
    const bob = await joined(small.base, TRANSPORTS.polling, room, 'Bob');
    const eve = client(small.base, { transports: TRANSPORTS.polling });
    await connected(eve);
    assert.deepEqual(await ack(eve, 'join', { room, name: 'Eve' }), { error: 'room full' });
    eve.emit('join', { room, name: 'Eve' });
    assert.deepEqual(await received(eve, 'error'), { reason: 'room full', event: 'join' });
    assert.deepEqual(await ack(bob.s, 'leave', {}), { ok: true });
    await received(ann.s, 'participant-left');
    const again = await ack(eve, 'join', { room, name: 'Eve' });
    assert.equal(again.ok, true, JSON.stringify(again));
    assert.deepEqual(again.participants, [{ id: ann.me.you, name: 'Ann' }]);
  });
});

// ---------------------------------------------------------------------------------------------
// Limits on the polling transport, and the served bundle

describe('limits', () => {
  const allowed = 'http://allowed.example';
  let np;
  before(async () => { np = await startNatpass(['--allow-origin', allowed]); });
  after(async () => { if (np) await np.stop(); });

  test('the polling handshake announces ping 15 s / timeout 30 s, a 64 KiB payload limit and the websocket upgrade', async () => {
    const h = await pollingHandshake(np.base);
    assert.equal(h.status, 200);
    assert.equal(typeof h.open.sid, 'string');
    assert.deepEqual(h.open.upgrades, ['websocket']);
    assert.equal(h.open.pingInterval, 15000);
    assert.equal(h.open.pingTimeout, 30000);
    assert.equal(h.open.maxPayload, 65536);
    await closeSession(np.base, h.open.sid);
  });

  test('a foreign Origin gets 403 on the polling handshake and on the websocket upgrade; the page origin and --allow-origin are let in', async () => {
    assert.equal((await pollingHandshake(np.base, FOREIGN)).status, 403);
    assert.equal((await pollingHandshake(np.base, np.base.replace('127.0.0.1', 'localhost'))).status, 403,
      'another host name is another origin');
    const ws = '/socket.io/?EIO=4&transport=websocket';
    assert.equal((await rawRequest(np.base, ws, { headers: { origin: FOREIGN }, upgrade: true })).status, 403);
    assert.equal((await rawRequest(np.base, ws, { headers: { origin: np.base }, upgrade: true })).status, 101);
    // A session opened with the right Origin cannot be carried on from a foreign page: every
    // request with its sid (poll, post, websocket upgrade) is checked too.
    const good = await pollingHandshake(np.base);
    const withSid = `${HANDSHAKE}&sid=${good.open.sid}`;
    assert.equal((await rawRequest(np.base, withSid, { headers: { origin: FOREIGN } })).status, 403, 'poll');
    assert.equal((await rawRequest(np.base, withSid, { method: 'POST', body: '40', headers: { origin: FOREIGN, 'content-type': 'text/plain;charset=UTF-8' } })).status, 403, 'post');
    assert.equal((await rawRequest(np.base, `/socket.io/?EIO=4&transport=websocket&sid=${good.open.sid}`, { headers: { origin: FOREIGN }, upgrade: true })).status, 403, 'upgrade');
    await closeSession(np.base, good.open.sid);
    for (const origin of [np.base, allowed]) {
      const h = await pollingHandshake(np.base, origin);
      assert.equal(h.status, 200, origin);
      await closeSession(np.base, h.open.sid, origin);
    }
    // And the real client from a foreign page fails to connect on both transports.
    for (const transports of Object.values(TRANSPORTS)) {
      const s = client(np.base, { transports, origin: FOREIGN });
      await assert.rejects(connected(s), transports.join());
      s.close();
    }
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: a payload over 64 KiB is refused and never delivered; one under it is`, async () => {
      const room = uniqueRoom('big');
      const ann = await joined(np.base, transports, room, 'Ann');
      const bob = await joined(np.base, transports, room, 'Bob');
      const fits = 'a'.repeat(48 * 1024);
      assert.deepEqual(await ack(ann.s, 'signal', { to: bob.me.you, data: { fits } }), { ok: true });
      assert.equal((await received(bob.s, 'signal')).data.fits.length, fits.length);

      const huge = 'b'.repeat(70 * 1024);
      const gone = new Promise((r) => ann.s.once('disconnect', (reason) => r({ disconnected: reason })));
      const answer = ack(ann.s, 'signal', { to: bob.me.you, data: { huge } }, 8000).catch((e) => ({ noAck: e.message }));
      const outcome = await Promise.race([answer, gone]);
      assert.ok(outcome.disconnected || (outcome.error && !outcome.ok), `refused: ${JSON.stringify(outcome).slice(0, 200)}`);
      await notReceived(bob.s, 'signal', (m) => m.data.huge, 1000);
    });

    test(`${name}: a flood gets "rate limit: slow down" after the burst, and the pace comes back`, async () => {
      const ann = await joined(np.base, transports, uniqueRoom('flood'), 'Ann');
      const pending = Array.from({ length: 160 }, (_, i) => ack(ann.s, 'chat', { text: `m${i}` }, 15000));
      // In the same burst, without an ack: the refusal comes as an error event.
      for (let i = 0; i < 5; i++) ann.s.emit('chat', { text: `no ack ${i}` });
      const answers = await Promise.all(pending);
      const ok = answers.filter((a) => a.ok === true).length;
      const limited = answers.filter((a) => a.error === 'rate limit: slow down').length;
      assert.equal(ok + limited, answers.length, JSON.stringify(answers.filter((a) => !a.ok && a.error !== 'rate limit: slow down')));
      assert.ok(limited >= 20, `${limited} of 160 limited`);
      assert.ok(ok >= 95 && ok <= 130, `${ok} of 160 let through (burst 100, 20/s)`);
      assert.deepEqual(await received(ann.s, 'error'), { reason: 'rate limit: slow down', event: 'chat' });
      await sleep(1200);
      assert.deepEqual(await ack(ann.s, 'chat', { text: 'calm again' }), { ok: true }, 'a limited socket is not banned');
      assert.ok(ann.s.connected);
    });
  }

  test('the client bundle is served at /socket.io/socket.io.js and socket.io.min.js, byte-identical to web-demo/vendor', async () => {
    const vendored = readFileSync(join(repo, 'web-demo', 'vendor', 'socket.io.min.js'));
    for (const path of ['/socket.io/socket.io.js', '/socket.io/socket.io.min.js']) {
      const r = await rawRequest(np.base, path);
      assert.equal(r.status, 200, path);
      assert.match(r.headers['content-type'] || '', /javascript/, path);
      assert.ok(Buffer.compare(r.body, vendored) === 0, `${path}: ${r.body.length} bytes, vendored ${vendored.length}`);
    }
  });
});

describe('connections per client IP', () => {
  let np;
  before(async () => { np = await startNatpass(); });
  after(async () => { if (np) await np.stop(); });

  test('the 33rd connection from one IP gets 429 on the handshake (polling and websocket) until one closes', async () => {
    const held = [];
    for (let i = 0; i < 32; i++) {
      const s = client(np.base, { transports: TRANSPORTS.websocket });
      await connected(s);
      held.push(s);
    }
    assert.equal((await pollingHandshake(np.base)).status, 429, 'polling handshake');
    const ws = '/socket.io/?EIO=4&transport=websocket';
    assert.equal((await rawRequest(np.base, ws, { headers: { origin: np.base }, upgrade: true })).status, 429, 'websocket');
    const extra = client(np.base, { transports: TRANSPORTS.polling });
    await assert.rejects(connected(extra));
    extra.close();
    held.pop().close();
    const h = await waitFor('a free slot', async () => {
      const r = await pollingHandshake(np.base);
      return r.status === 200 ? r : null;
    }, 5000, 100);
    await closeSession(np.base, h.open.sid);
    for (const s of held) s.close();
  });

});

describe('connections per client IP: Engine.IO sessions', () => {
  let np;
  // A server of their own: sessions left by other tests must not hold slots here.
  beforeEach(async () => { np = await startNatpass(); });
  afterEach(async () => { if (np) await np.stop(); np = null; });

  test('Engine.IO sessions that never connect to the namespace count toward the 32 as well', async () => {
    const sids = [];
    const statuses = [];
    try {
      for (let i = 0; i < 40; i++) {
        const h = await pollingHandshake(np.base);
        statuses.push(h.status);
        if (h.open) sids.push(h.open.sid);
      }
    } finally {
      for (const sid of sids) await closeSession(np.base, sid);
    }
    assert.deepEqual(statuses.slice(0, 32), Array(32).fill(200));
    assert.deepEqual(statuses.slice(32), Array(8).fill(429), `handshakes 33-40: ${statuses.slice(32)}`);
  });

  // An Engine.IO session that never connects to the namespace holds its slot until the connect
  // timeout (5 s): the server cannot tell which pending session a close packet ended, since
  // Socket.IO v5 socket ids are not Engine.IO session ids.
  test('a session closed before it connects frees its slot within the connect timeout', { timeout: 30000 }, async () => {
    const sids = [];
    try {
      for (let i = 0; i < 32; i++) {
        const h = await pollingHandshake(np.base);
        assert.equal(h.status, 200, `handshake ${i + 1}`);
        sids.push(h.open.sid);
      }
      assert.equal((await pollingHandshake(np.base)).status, 429, 'the cap is reached');
      await closeSession(np.base, sids.pop()); // the client closes one (an Engine.IO close packet)
      const h = await waitFor('a free slot', async () => {
        const r = await pollingHandshake(np.base);
        return r.status === 200 ? r : null;
      }, 7000, 100);
      sids.push(h.open.sid);
    } finally {
      for (const sid of sids) await closeSession(np.base, sid);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A participant that stops reading

describe('a participant that stops reading', () => {
  let np;
  before(async () => { np = await startNatpass(); });
  after(async () => { if (np) await np.stop(); });

  test('no acked signal is lost: what its old session still holds plus its resume backlog is every signal, once each, in order', { timeout: 60000 }, async () => {
    const room = uniqueRoom('slow');
    const slow = await RawPolling.open(np.base);
    const me = await slow.call('join', { room, name: 'Slow' });
    assert.equal(me.ok, true, JSON.stringify(me));
    // Four senders (each under its own rate limit), 90 signals each: more than the 256 packets
    // a socket may have waiting, while Slow reads nothing.
    const senders = [];
    for (const name of ['S1', 'S2', 'S3', 'S4']) senders.push(await joined(np.base, TRANSPORTS.websocket, room, name));
    const acks = await Promise.all(senders.map((x, k) => Promise.all(Array.from({ length: 90 }, (_, n) =>
      ack(x.s, 'signal', { to: me.you, data: { k, n } }, 15000)))));
    for (const a of acks.flat()) assert.deepEqual(a, { ok: true }, 'Slow is still a participant: every signal is accepted');
    await sleep(500);
    // What the old session still hands out (nothing, if the server closed it), then a resume.
    const leftovers = [];
    for (let i = 0; i < 400; i++) {
      const packets = await slow.poll(1500);
      if (!packets || packets.length === 0) break;
      leftovers.push(...packets);
      if (packets.some((p) => p === '1' || p.startsWith('41'))) break;
    }
    const back = client(np.base, { transports: TRANSPORTS.websocket, auth: { resume: me.resume } });
    await connected(back);
    const resumed = await received(back, 'resumed').catch(() => null);
    await sleep(1000);
    const got = [...eventsIn(slow.backlog), ...eventsIn(leftovers), ...back.log]
      .filter(([e]) => e === 'signal')
      .map(([, m]) => m.data);
    const missing = [];
    for (let k = 0; k < 4; k++) {
      const seq = got.filter((d) => d.k === k).map((d) => d.n);
      assert.deepEqual(seq, [...seq].sort((a, b) => a - b), `sender ${k}'s signals in order`);
      assert.equal(new Set(seq).size, seq.length, `sender ${k}'s signals each delivered once`);
      for (let n = 0; n < 90; n++) if (!seq.includes(n)) missing.push(`${k}:${n}`);
    }
    assert.ok(resumed, 'the participant could resume');
    assert.deepEqual(missing, [], `${missing.length} of 360 acked signals never delivered (resumed backlog ${back.log.filter(([e]) => e === 'signal').length}, old session ${eventsIn(leftovers).length})`);
  });

  test('a polling session that stops answering pings is closed within ping interval + timeout (45 s) but not before the timeout (30 s), and its participant is detached, not gone', { timeout: 90000 }, async () => {
    const room = uniqueRoom('idle');
    const idle = await RawPolling.open(np.base);
    const me = await idle.call('join', { room, name: 'Idle' });
    assert.equal(me.ok, true);
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    const quietSince = Date.now();
    // Probing with GETs never answers a ping (only a POSTed pong does).
    const open = async () => {
      try {
        const r = await rawRequest(np.base, idle.path, { headers: { origin: np.base }, timeoutMs: 1000 });
        return r.status === 200 && !r.body.toString().split('\x1e').includes('1');
      } catch (e) {
        if (/no answer/.test(e.message)) return true; // a long poll held open: alive
        throw e;
      }
    };
    await sleep(25000);
    assert.ok(await open(), 'still open 25 s after going quiet (the client has the 30 s ping timeout to answer)');
    await waitFor('the idle session closed', async () => !(await open()), 25000, 500);
    const closedAfter = Date.now() - quietSince;
    assert.ok(closedAfter <= 50000, `closed ${closedAfter} ms after it went quiet (15 s + 30 s, 5 s slack)`);
    // Detached, not gone: it can still be resumed within the grace period.
    const back = client(np.base, { transports: TRANSPORTS.websocket, auth: { resume: me.resume } });
    await connected(back);
    assert.equal((await received(back, 'resumed')).you, me.you);
    assert.equal(bob.s.log.find(([e]) => e === 'participant-left'), undefined);
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed input

describe('malformed packets', () => {
  let np;
  before(async () => { np = await startNatpass(); });
  after(async () => { if (np) await np.stop(); });

  test('no malformed Socket.IO packet takes the server down or answers for another participant', { timeout: 120000 }, async () => {
    const room = uniqueRoom('garbage');
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const packets = [
      '', '4', '9', '42', '42[', '42[]', '42{}', '42[123]', '42[null]', '42[["join"]]', '42["join"]', '42["join",null]',
      '42["join","room"]', '42["join",{"room":123,"name":[]}]', '42["join",{"room":"' + room + '","name":{"x":1}}]',
      '42["signal",{"to":{"x":1},"data":1}]', '42["signal","to"]', '42["chat",{"text":123}]', '42["chat",{"text":null}]',
      '42["join_room",{"a":1}]', '42["join_room",null]', '42["offer"]', '42["ice",null,null]', '42["ice",1,2,3,4]',
      '4299999999999999999999["chat",{}]', '42-1["chat",{}]', '42 ["chat",{}]', '42["' + 'x'.repeat(2000) + '",{}]',
      `42["signal",{"to":"x","data":${deep}}]`, `42${deep}`, '451-["signal",{"_placeholder":true,"num":0}]',
      '452-["join",{"_placeholder":true,"num":7}]', '40/nope,', '40/nope,{"resume":1}', '40{"resume":[1,2]}', '41', '43', '430[]',
      '44', '46', '4\u0000', '42["leave"]\u0000', '\x1e\x1e',
    ];
    for (const p of packets) {
      const raw = await RawPolling.open(np.base, { resume: 'nope' });
      const status = await raw.post([p]).catch(() => 'closed');
      assert.ok([200, 400, 'closed'].includes(status), `POST ${JSON.stringify(p.slice(0, 60))}: ${status}`);
      assert.equal(np.child.exitCode, null, `natpass exited after ${JSON.stringify(p.slice(0, 60))}`);
      await closeSession(np.base, raw.sid);
    }
    // Still serving: a new participant joins Bob's room and reaches him; nothing from the
    // garbage joined it or spoke in it.
    assert.equal((await rawRequest(np.base, '/healthz')).status, 200);
    const ann = await joined(np.base, TRANSPORTS.polling, room, 'Ann');
    assert.deepEqual(ann.me.participants, [{ id: bob.me.you, name: 'Bob' }], 'only Bob is in the room');
    assert.deepEqual(await ack(ann.s, 'signal', { to: bob.me.you, data: 'after the garbage' }), { ok: true });
    assert.deepEqual(await received(bob.s, 'signal'), { from: ann.me.you, data: 'after the garbage' });
    assert.deepEqual(bob.s.log.map(([e, m]) => [e, m.id || m.from]), [['participant-joined', ann.me.you], ['signal', ann.me.you]]);
  });
});

// ---------------------------------------------------------------------------------------------
// An operator closes a room

describe('room closed by an operator', () => {
  const TOKEN = 'test-admin-token-0123456789abcdef';
  let np;
  let admin;
  before(async () => {
    admin = `127.0.0.1:${await freePort()}`;
    np = await startNatpass(['--admin-listen', admin, '--admin-token', TOKEN]);
  });
  after(async () => { if (np) await np.stop(); });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: DELETE /admin/rooms/ROOM sends room-closed {} then disconnects, and the tokens no longer resume`, async () => {
      const room = uniqueRoom('closed');
      const ann = await joined(np.base, transports, room, 'Ann');
      const bob = await joined(np.base, transports, room, 'Bob');
      const gone = [ann, bob].map((x) => new Promise((r) => x.s.once('disconnect', (reason) => r(reason))));
      const r = await rawRequest(`http://${admin}`, `/admin/rooms/${room}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(r.status, 200, r.body.toString());
      assert.deepEqual(await Promise.all(gone), ['io server disconnect', 'io server disconnect']);
      for (const x of [ann, bob]) assert.deepEqual(x.s.log.filter(([e]) => e === 'room-closed'), [['room-closed', {}]]);
      assert.equal(ann.s.log.find(([e]) => e === 'participant-left'), undefined, 'room-closed, not one leave per participant');
      const back = client(np.base, { transports, auth: { resume: ann.me.resume } });
      await connected(back);
      assert.deepEqual(await received(back, 'resume-failed'), {}, 'a closed room cannot be resumed into');
    });
  }
});

// ---------------------------------------------------------------------------------------------
// No message bodies in the logs

describe('logging', () => {
  let np;
  let dir;
  let logFile;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'natpass-sio-log-'));
    logFile = join(dir, 'natpass.log');
    const level = process.env.NATPASS_LOG;
    process.env.NATPASS_LOG = 'trace';
    try {
      // The shell execs natpass (same PID, stopped by it) with its output in a file.
      np = await startNatpass([], { wrap: ['sh', '-c', `exec "$0" "$@" >>'${logFile}' 2>&1`] });
    } finally {
      if (level === undefined) delete process.env.NATPASS_LOG; else process.env.NATPASS_LOG = level;
    }
  });
  after(async () => {
    if (np) await np.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('trace logs carry no chat text, signal data, compat payloads or resume tokens', async () => {
    const room = uniqueRoom('quiet');
    const ann = await joined(np.base, TRANSPORTS.polling, room, 'Ann');
    const bob = await joined(np.base, TRANSPORTS.websocket, room, 'Bob');
    await ack(ann.s, 'chat', { text: 'chat-body-7f3a' });
    await ack(ann.s, 'signal', { to: bob.me.you, data: { sdp: 'a=ice-pwd:signal-body-91c2' } });
    await received(bob.s, 'signal');
    const { first } = await zoomCall(np.base, TRANSPORTS.websocket, uniqueRoom('quiet-zoom'));
    first.socket.emit('ice', { candidate: 'compat-body-5d0e' }, 'nowhere');
    await sleep(500);
    const log = readFileSync(logFile, 'utf8');
    assert.ok(log.length > 0, 'natpass logged something at trace');
    for (const secret of ['chat-body-7f3a', 'signal-body-91c2', 'ice-pwd', 'compat-body-5d0e', ann.me.resume, bob.me.resume]) {
      assert.ok(!log.includes(secret), `the log contains ${secret}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The same unmodified Zoom-clone script in Chromium: the vendored bundle from natpass, real
// getUserMedia (fake devices) and real RTCPeerConnections, which must connect.

const ZOOM_PAGE = (transports) => `<!doctype html>
<html><head><meta charset="utf-8"><title>Zoom clone</title></head><body>
<div id="welcome"><form><input placeholder="room name" required type="text"><button>Enter room</button></form></div>
<div id="call"><div id="myStream">
  <video id="myFace" autoplay playsinline muted width="320" height="240"></video>
  <video id="peerFace" autoplay playsinline width="320" height="240"></video>
</div></div>
<script src="/socket.io/socket.io.js"></script>
${transports ? `<script>{ const real = io; window.io = (...a) => real(...a, { transports: ${JSON.stringify(transports)} }); }</script>` : ''}
<script src="/zoomclone/app.js"></script>
</body></html>`;

describe('the Zoom-clone script in Chromium', () => {
  let np;
  let chrome;
  before(async () => {
    np = await startNatpass();
    // A page answered by route.fulfill has no IP address, so Chromium's Local Network Access
    // rules treat it as public and block its WebSocket to loopback (polling passes as
    // same-origin): off, since natpass's own page, served for real, never meets this.
    chrome = await launchChromium({ extraFlags: ['--disable-features=LocalNetworkAccessChecks'] });
  });
  after(async () => {
    if (chrome) await chrome.close();
    if (np) await np.stop();
  });

  for (const [name, transports] of [['default transports (upgrade)', null], ['polling', TRANSPORTS.polling]]) {
    test(`${name}: two tabs join_room and their RTCPeerConnections connect with media flowing`, { timeout: 90000 }, async () => {
      const ctx = chrome.context;
      // The page is served as if natpass had it (same origin, so io() finds natpass); its
      // script is zoomclone/app.js as it is on disk.
      await ctx.route(`${np.base}/zoomclone/**`, (route) => {
        const u = new URL(route.request().url());
        if (u.pathname === '/zoomclone/app.js') return route.fulfill({ contentType: 'text/javascript', body: ZOOM_SCRIPT });
        return route.fulfill({ contentType: 'text/html', body: ZOOM_PAGE(transports) });
      });
      const room = uniqueRoom('chromium');
      const pages = [];
      const errors = [];
      try {
        for (let i = 0; i < 2; i++) {
          const page = await ctx.newPage();
          page.on('pageerror', (e) => errors.push(e.message));
          await page.goto(`${np.base}/zoomclone/index.html`);
          await page.fill('#welcome input', room);
          await page.click('#welcome button');
          await page.waitForFunction(() => document.getElementById('call').hidden === false, null, { timeout: 10000 });
          pages.push(page);
        }
        for (const page of pages) {
          await page.waitForFunction(() => typeof myPeerConnection !== 'undefined' && myPeerConnection.connectionState === 'connected', null, { timeout: 30000 });
        }
        const inbound = async (page) => page.evaluate(async () => {
          const r = await myPeerConnection.getStats();
          let bytes = 0;
          r.forEach((s) => { if (s.type === 'inbound-rtp') bytes += s.bytesReceived || 0; });
          return bytes;
        });
        for (const page of pages) {
          await waitFor('media received', async () => (await inbound(page)) > 0, 20000, 250);
        }
        for (const page of pages) {
          const transport = await page.evaluate(() => socket.io.engine.transport.name);
          assert.equal(transport, transports ? 'polling' : 'websocket', 'the transport used');
        }
        assert.deepEqual(errors, [], 'no page errors');
      } finally {
        for (const p of pages) await p.close().catch(() => {});
        await ctx.unroute(`${np.base}/zoomclone/**`);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Several nodes on one Redis: the contract stays the same when the participants of a room are
// connected to different natpass processes.

/** Debian's redis-server on a free loopback port, no persistence; stopped by its PID. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  let failed = null;
  child.on('error', (e) => { failed = e; });
  await waitFor('redis PONG', () => new Promise((resolve) => {
    if (failed) throw new Error(`redis-server: ${failed.message} (Debian: apt-get install redis-server)`);
    if (child.exitCode !== null) throw new Error('redis-server exited with ' + child.exitCode);
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => resolve(false));
    c.on('data', (d) => { c.destroy(); resolve(d.toString().startsWith('+PONG')); });
    c.on('connect', () => c.write('PING\r\n'));
  }), 10000, 100);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    },
  };
}

describe('two nodes on one Redis', () => {
  let redis;
  let one;
  let two;
  before(async () => {
    redis = await startRedis();
    one = await startNatpass(['--redis', redis.url, '--room-size', '3', '--sfu', 'false']);
    two = await startNatpass(['--redis', redis.url, '--room-size', '3', '--sfu', 'false']);
    for (const n of [one, two]) {
      await waitFor('readyz (a leader is known)', async () => (await rawRequest(n.base, '/readyz')).status === 200, 20000, 200);
    }
  });
  after(async () => {
    if (two) await two.stop();
    if (one) await one.stop();
    if (redis) await redis.stop();
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`${name}: join, signal (in order), chat and leave between participants on different nodes`, async () => {
      const room = uniqueRoom('nodes');
      const ann = await joined(one.base, transports, room, 'Ann');
      const bob = await joined(two.base, transports, room, 'Bob');
      assert.deepEqual(bob.me.participants, [{ id: ann.me.you, name: 'Ann' }]);
      assertIceServers(bob.me.iceServers);
      assert.deepEqual(await received(ann.s, 'participant-joined'), { id: bob.me.you, name: 'Bob' });
      const burst = Array.from({ length: 40 }, (_, n) => ack(ann.s, 'signal', { to: bob.me.you, data: { n } }));
      for (const a of await Promise.all(burst)) assert.deepEqual(a, { ok: true });
      await waitFor('the burst', () => bob.s.log.filter(([e]) => e === 'signal').length === 40, 10000, 25).catch((e) => {
        throw new Error(`${e.message}: Bob got ${JSON.stringify(bob.s.log.filter(([x]) => x === 'signal').map(([, m]) => m.data.n))}, drops ${JSON.stringify(bob.s.drops)}`);
      });
      assert.deepEqual(bob.s.log.filter(([e]) => e === 'signal').map(([, m]) => [m.from, m.data.n]),
        Array.from({ length: 40 }, (_, n) => [ann.me.you, n]), 'in order, from Ann');
      // Opaque data is relayed as sent, whatever JSON it is, both ways.
      for (const data of [null, 0, '', [], { nested: { deep: [1, null, 'x'] } }]) {
        for (const [from, to] of [[ann, bob], [bob, ann]]) {
          const mark = to.s.log.length;
          assert.deepEqual(await ack(from.s, 'signal', { to: to.me.you, data }), { ok: true });
          await waitFor('the signal', () => to.s.log.slice(mark).some(([e]) => e === 'signal'), 5000, 25);
          assert.deepEqual(to.s.log.slice(mark).find(([e]) => e === 'signal')[1], { from: from.me.you, data }, `data ${JSON.stringify(data)} from ${from === ann ? 'node one' : 'node two'}`);
        }
      }
      assert.deepEqual(await ack(bob.s, 'chat', { text: 'across nodes' }), { ok: true });
      assert.deepEqual(await received(ann.s, 'chat'), { from: bob.me.you, name: 'Bob', text: 'across nodes' });
      assert.deepEqual(await ack(bob.s, 'signal', { to: 'nobody', data: {} }), { error: 'no such participant' });
      assert.deepEqual(await ack(bob.s, 'leave', {}), { ok: true });
      assert.deepEqual(await received(ann.s, 'participant-left'), { id: bob.me.you });
    });
  }

  test('the room cap holds across nodes', async () => {
    const room = uniqueRoom('capnodes');
    await joined(one.base, TRANSPORTS.websocket, room, 'A');
    await joined(two.base, TRANSPORTS.websocket, room, 'B');
    // Two more at once, one per node, for the last seat: exactly one gets it.
    const c = client(one.base, { transports: TRANSPORTS.websocket });
    const d = client(two.base, { transports: TRANSPORTS.websocket });
    await Promise.all([connected(c), connected(d)]);
    const answers = await Promise.all([ack(c, 'join', { room, name: 'C' }), ack(d, 'join', { room, name: 'D' })]);
    assert.equal(answers.filter((a) => a.ok).length, 1, JSON.stringify(answers));
    assert.deepEqual(answers.find((a) => !a.ok), { error: 'room full' });
  });

  test('a participant dropped on one node resumes on the other with its backlog first', async () => {
    const room = uniqueRoom('movenodes');
    const ann = await joined(one.base, TRANSPORTS.websocket, room, 'Ann');
    const bob = await joined(two.base, TRANSPORTS.websocket, room, 'Bob');
    ann.s.io.engine.close();
    await sleep(500);
    assert.deepEqual(await ack(bob.s, 'signal', { to: ann.me.you, data: { n: 1 } }), { ok: true });
    assert.deepEqual(await ack(bob.s, 'signal', { to: ann.me.you, data: { n: 2 } }), { ok: true });
    const back = client(two.base, { transports: TRANSPORTS.polling, auth: { resume: ann.me.resume } });
    const offline = ack(back, 'signal', { to: bob.me.you, data: { from: 'resumed socket' } }, 10000);
    await connected(back);
    await waitFor('resumed and the backlog', () => back.log.filter(([e]) => e === 'signal').length >= 2, 10000, 25);
    assert.deepEqual(back.log.slice(0, 3).map(([e, a]) => (e === 'resumed' ? [e, a.you] : [e, a])), [
      ['resumed', ann.me.you],
      ['signal', { from: bob.me.you, data: { n: 1 } }],
      ['signal', { from: bob.me.you, data: { n: 2 } }],
    ]);
    assert.deepEqual(await offline, { ok: true });
    assert.deepEqual(await received(bob.s, 'signal'), { from: ann.me.you, data: { from: 'resumed socket' } });
    assert.equal(bob.s.log.find(([e]) => e === 'participant-left'), undefined);
  });

  test('the Zoom-clone script works with its two tabs on different nodes', async () => {
    const room = uniqueRoom('zoomnodes');
    const first = zoomTab(one.base, TRANSPORTS.websocket);
    first.submit(room);
    assert.deepEqual(await first.joinedRoom(), ['join_room', []]);
    const second = zoomTab(two.base, TRANSPORTS.polling);
    second.submit(room);
    assert.deepEqual(await second.joinedRoom(), ['join_room', []]);
    await waitFor('offer, answer and candidates across nodes', () =>
      second.pc().remoteDescription && first.pc().remoteDescription &&
      first.pc().addedCandidates.length === 3 && second.pc().addedCandidates.length === 3, 10000, 25);
    assert.deepEqual(second.pc().remoteDescription, first.pc().localDescription);
    assert.deepEqual(first.pc().remoteDescription, second.pc().localDescription);
    // Both ways, the end-of-candidates null included: relayed as sent, not dropped to no argument.
    assert.deepEqual(first.pc().addedCandidates, second.pc().sentCandidates, 'node two → node one');
    assert.deepEqual(second.pc().addedCandidates, first.pc().sentCandidates, 'node one → node two');
  });
});

// socket.io-client 3.x speaks the same Engine.IO 4 / Socket.IO 5 as 4.x, without emitWithAck:
// the events natpass documents and the Zoom-clone set, with callback acks, on each transport
// and through the polling → websocket upgrade.
describe('socket.io-client 3.x (3.1.3, the other client generation of the protocol)', () => {
  let np;
  before(async () => {
    np = await startNatpass();
  });
  after(async () => {
    if (np) await np.stop();
  });
  const v3 = (transports) => {
    const s = io3(np.base, { forceNew: true, transports, reconnection: false, timeout: 5000, extraHeaders: { origin: np.base } });
    opened.add(s);
    return s;
  };
  const ack = (s, event, ...args) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ack for ${event}`)), 5000);
    s.emit(event, ...args, (...reply) => { clearTimeout(t); resolve(reply); });
  });
  const nextArgs = (s, event) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event}`)), 5000);
    s.once(event, (...args) => { clearTimeout(t); resolve(args); });
  });
  for (const [name, transports] of Object.entries({ ...TRANSPORTS, upgrade: ['polling', 'websocket'] })) {
    test(`${name}: join, participant-joined, signal, chat and the Zoom-clone relay`, async () => {
      const ann = v3(transports);
      const ben = v3(transports);
      const room = uniqueRoom('v3');
      const [ja] = await ack(ann, 'join', { room, name: 'Ann' });
      assert.equal(ja.ok, true, JSON.stringify(ja));
      const joined = nextArgs(ann, 'participant-joined');
      const [jb] = await ack(ben, 'join', { room, name: 'Ben' });
      assert.deepEqual(jb.participants, [{ id: ja.you, name: 'Ann' }]);
      assert.ok(jb.iceServers.length > 0, 'fresh ICE servers in the join answer');
      assert.deepEqual(await joined, [{ id: jb.you, name: 'Ben' }]);
      const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n' };
      const signal = nextArgs(ben, 'signal');
      assert.deepEqual(await ack(ann, 'signal', { to: jb.you, data: offer }), [{ ok: true }]);
      assert.deepEqual(await signal, [{ from: ja.you, data: offer }]);
      const chat = nextArgs(ann, 'chat');
      ben.emit('chat', { text: 'hi from 3.x' });
      assert.deepEqual(await chat, [{ from: jb.you, name: 'Ben', text: 'hi from 3.x' }]);

      const first = v3(transports);
      const second = v3(transports);
      const croom = uniqueRoom('v3 compat');
      assert.deepEqual(await ack(first, 'join_room', croom), [], 'join_room acked with no arguments');
      const welcome = nextArgs(first, 'welcome');
      assert.deepEqual(await ack(second, 'join_room', croom), []);
      assert.deepEqual(await welcome, [], 'welcome has no arguments');
      const relayed = nextArgs(first, 'offer');
      second.emit('offer', offer, croom);
      assert.deepEqual(await relayed, [offer], 'the offer as sent');
      const ice = nextArgs(second, 'ice');
      first.emit('ice', { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' }, croom);
      assert.deepEqual(await ice, [{ candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' }]);
      if (name === 'upgrade') {
        await waitFor('the upgrade to websocket', () => ann.io.engine.transport.name === 'websocket', 5000, 25);
      } else {
        assert.equal(ann.io.engine.transport.name, name);
      }
    });
  }
});
