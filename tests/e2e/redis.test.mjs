// Rooms across two natpass processes sharing one real redis-server (Debian's, started here on
// a free loopback port with persistence off, stopped by PID): socket.io-client participants on
// different nodes in one room, a resume that lands on the other node, a node that dies (its
// participants leave after the grace period), a headless Chromium call with one page on each
// node, a Redis restart in the middle of it (signaling recovers by itself, /readyz says so while
// it lasts, a third person can join afterwards), and a clear error when Redis is not there at
// start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { io } from 'socket.io-client';
import { startNatpass, launchChromium, freePort, waitFor, sleep, natpassBin, joinCall, waitConnected, stats } from './lib.mjs';

const SECRET = 'redis-e2e-shared-secret';
let redisPort = null;
let redis = null;
const nodes = [];
let chrome = null;

async function startRedis(port) {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await waitFor('redis-server', async () => {
    if (child.exitCode !== null) throw new Error('redis-server exited with ' + child.exitCode);
    const r = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
    return r.stdout.trim() === 'PONG';
  }, 10000, 100);
  return child;
}

async function stopRedis() {
  if (redis && redis.exitCode === null) {
    redis.kill('SIGKILL');
    await Promise.race([new Promise((r) => redis.once('exit', r)), sleep(3000)]);
  }
  redis = null;
}

const node = (extra = []) => startNatpass(['--redis', `redis://127.0.0.1:${redisPort}`, '--auth-secret', SECRET, ...extra]);

before(async () => {
  redisPort = await freePort();
  redis = await startRedis(redisPort);
  nodes.push(await node(), await node());
  // Both nodes see the same leader before anything joins.
  await waitFor('both nodes ready', async () => {
    const r = await Promise.all(nodes.map((n) => fetch(`${n.base}/readyz`).then((x) => x.status)));
    return r.every((s) => s === 200);
  }, 15000, 200);
});

after(async () => {
  if (chrome) await chrome.close();
  for (const n of nodes) await n.stop();
  await stopRedis();
});

function client(base, opts = {}) {
  return io(base, { transports: ['websocket'], reconnection: false, forceNew: true, extraHeaders: { origin: base }, ...opts });
}
const ack = (s, event, arg = {}, ms = 5000) => s.timeout(ms).emitWithAck(event, arg);
const next = (s, event, ms = 5000) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
  s.once(event, (m) => { clearTimeout(t); resolve(m); });
});

test('participants on two nodes share a room: joins, signals in order, chat, leave', async () => {
  const room = 'two-nodes-' + process.pid;
  const ann = client(nodes[0].base);
  const ben = client(nodes[1].base);
  try {
    const ja = await ack(ann, 'join', { room, name: 'Ann' });
    assert.equal(ja.ok, true, JSON.stringify(ja));
    const joinedAtAnn = next(ann, 'participant-joined');
    const jb = await ack(ben, 'join', { room, name: 'Ben' });
    assert.deepEqual(jb.participants, [{ id: ja.you, name: 'Ann' }]);
    assert.deepEqual(await joinedAtAnn, { id: jb.you, name: 'Ben' });
    // Each node hands out its own TURN URLs.
    assert.match(jb.iceServers[0].urls[0], new RegExp(`:${nodes[1].turnPort}$`));
    assert.match(ja.iceServers[0].urls[0], new RegExp(`:${nodes[0].turnPort}$`));
    // Signals across nodes keep their order.
    const got = [];
    ben.on('signal', (m) => got.push(m.data));
    for (let i = 0; i < 50; i++) ann.emit('signal', { to: jb.you, data: i });
    assert.deepEqual(await ack(ann, 'signal', { to: jb.you, data: 'last' }), { ok: true });
    await waitFor('50 signals at Ben', () => got.length === 51, 5000, 50);
    assert.deepEqual(got, [...Array(50).keys(), 'last']);
    const chat = next(ann, 'chat');
    await ack(ben, 'chat', { text: 'hi from node 2' });
    assert.equal((await chat).text, 'hi from node 2');
    const left = next(ann, 'participant-left');
    await ack(ben, 'leave');
    assert.deepEqual(await left, { id: jb.you });
  } finally {
    ann.close();
    ben.close();
  }
});

test('the room cap holds across nodes', async () => {
  // Eight people (the default cap of a mesh: the first asks for one, so the room never moves
  // to the SFU), alternating between the nodes; the ninth is refused.
  const room = 'cap-' + process.pid;
  const clients = [];
  try {
    for (let i = 0; i < 8; i++) {
      const c = client(nodes[i % 2].base);
      clients.push(c);
      assert.equal((await ack(c, 'join', { room, name: 'p' + i, mode: 'mesh' })).ok, true);
    }
    const late = client(nodes[1].base);
    clients.push(late);
    assert.equal((await ack(late, 'join', { room, name: 'late' })).error, 'room full');
  } finally {
    for (const c of clients) c.close();
  }
});

test('a participant whose reconnect lands on the other node resumes there, with what was sent meanwhile', async () => {
  const room = 'resume-' + process.pid;
  const ann = client(nodes[0].base);
  const ben = client(nodes[0].base);
  let ben2 = null;
  try {
    const ja = await ack(ann, 'join', { room, name: 'Ann' });
    const jb = await ack(ben, 'join', { room, name: 'Ben' });
    ben.close();
    await sleep(300);
    for (let i = 0; i < 3; i++) assert.deepEqual(await ack(ann, 'signal', { to: jb.you, data: i }), { ok: true });
    const got = [];
    ben2 = client(nodes[1].base, { auth: { resume: jb.resume } });
    ben2.on('signal', (m) => got.push(m.data));
    const resumed = await next(ben2, 'resumed');
    assert.equal(resumed.you, jb.you, 'same identity');
    assert.deepEqual(resumed.participants, [{ id: ja.you, name: 'Ann' }]);
    assert.match(resumed.iceServers[0].urls[0], new RegExp(`:${nodes[1].turnPort}$`), 'the new node\'s TURN');
    await waitFor('the backlog', () => got.length === 3, 5000, 50);
    assert.deepEqual(got, [0, 1, 2]);
  } finally {
    ann.close();
    if (ben2) ben2.close();
  }
});

test('a node that dies takes its participants with it, after the grace period', { timeout: 90000 }, async () => {
  // A third node (never the leader: one leads already); Ben on it, Ann on the first node. The
  // third is killed without a word: Ann sees Ben leave once its liveness lease (5 s) has run
  // out and the grace period (20 s) has passed, as if Ben's own connection had dropped.
  const room = 'node-dies-' + process.pid;
  const third = await node();
  const ann = client(nodes[0].base);
  let ben = null;
  try {
    await waitFor('the third node ready', async () => (await fetch(`${third.base}/readyz`)).status === 200, 15000, 200);
    ben = client(third.base);
    const ja = await ack(ann, 'join', { room, name: 'Ann' });
    const jb = await ack(ben, 'join', { room, name: 'Ben' });
    assert.deepEqual(jb.participants, [{ id: ja.you, name: 'Ann' }]);
    const left = next(ann, 'participant-left', 60000);
    const t0 = Date.now();
    third.child.kill('SIGKILL');
    assert.deepEqual(await left, { id: jb.you });
    const secs = (Date.now() - t0) / 1000;
    assert.ok(secs >= 20 && secs < 40, `Ben left ${secs} s after his node died`);
    // The room goes on: someone new on the second node joins and sees Ann only.
    const cy = client(nodes[1].base);
    try {
      const jc = await ack(cy, 'join', { room, name: 'Cy' });
      assert.deepEqual(jc.participants, [{ id: ja.you, name: 'Ann' }]);
    } finally {
      cy.close();
    }
  } finally {
    ann.close();
    if (ben) ben.close();
    await third.stop();
  }
});

test('a call with one page on each node survives a Redis restart; whoever pressed Join meanwhile gets in, and so does a fourth person', { timeout: 240000 }, async () => {
  chrome = await launchChromium();
  const room = 'rediscall' + Math.random().toString(16).slice(2, 10);
  const url = (n, name) => `${nodes[n].base.replace('127.0.0.1', 'localhost')}/?room=${room}&name=${name}&relay=0`;
  const a = await chrome.context.newPage();
  await joinCall(a, url(0, 'Ann'));
  const b = await chrome.context.newPage();
  await joinCall(b, url(1, 'Ben'));
  await waitConnected(a, 1, { minFrames: 5 });
  await waitConnected(b, 1, { minFrames: 5 });

  // Redis goes away: both nodes say so on /readyz; the call's media is peer to peer and goes on.
  await stopRedis();
  await waitFor('both nodes not ready', async () => {
    const r = await Promise.all(nodes.map((n) => fetch(`${n.base}/readyz`).then((x) => x.status)));
    return r.every((s) => s === 503);
  }, 15000, 200);
  const framesBefore = Object.values(await stats(a))[0].framesDecoded;
  await sleep(1500);
  assert.ok(Object.values(await stats(a))[0].framesDecoded > framesBefore, 'media flows while Redis is down');
  // Someone presses Join while Redis is down: refused for now (not ready), the page keeps trying.
  const d = await chrome.context.newPage();
  await joinCall(d, url(0, 'Dee'));
  await sleep(1000);
  assert.notEqual(await d.evaluate(() => window.natpass.signaling().state), 'ready', 'not in the room while Redis is down');

  // Redis is back (empty): nodes reconnect by themselves, elect a leader, and the pages'
  // signaling comes back (a reconnect at worst).
  redis = await startRedis(redisPort);
  await waitFor('both nodes ready again', async () => {
    const r = await Promise.all(nodes.map((n) => fetch(`${n.base}/readyz`).then((x) => x.status)));
    return r.every((s) => s === 200);
  }, 30000, 200);
  for (const p of [a, b]) {
    await waitFor('signaling back in the room', async () => (await p.evaluate(() => window.natpass.signaling().state)) === 'ready', 45000, 250);
  }
  // Dee, refused during the outage, got in by herself: everyone sees everyone.
  for (const p of [a, b, d]) await waitConnected(p, 2, { minFrames: 5, timeoutMs: 90000 });
  // Then Cy joins on node 2 and sees everyone.
  const c = await chrome.context.newPage();
  await joinCall(c, url(1, 'Cy'));
  await waitConnected(c, 3, { minFrames: 5, timeoutMs: 90000 });
  await waitConnected(a, 3, { minFrames: 5, timeoutMs: 60000 });
  assert.equal(await a.locator('[data-testid="tiles"] .tile').count(), 4, 'one tile per person');
  for (const p of [a, b, c, d]) await p.close();
});

// An SFU room whose participants signal through different nodes: the room engine runs on the
// leader, so every participant's SFU session is on the leader's SFU, whichever node its socket
// is on (the SDP goes through Redis; the media goes straight to that SFU).
test('an SFU room with pages on both nodes: one SFU session each, everyone decodes everyone', { timeout: 150000 }, async () => {
  if (!chrome) chrome = await launchChromium();
  const room = 'redissfu' + Math.random().toString(16).slice(2, 10);
  const url = (n, name) => `${nodes[n].base.replace('127.0.0.1', 'localhost')}/?room=${room}&name=${name}&mode=sfu`;
  const pages = [];
  for (const [n, name] of [[0, 'Ann'], [1, 'Ben'], [1, 'Cy']]) {
    const p = await chrome.context.newPage();
    await joinCall(p, url(n, name), { smallVideo: true });
    pages.push(p);
  }
  for (const p of pages) {
    const s = await waitConnected(p, 2, { minFrames: 5, timeoutMs: 90000 });
    assert.ok(Object.values(s).every((x) => x.route.endsWith('to the SFU')), JSON.stringify(s));
    assert.equal(await p.evaluate(() => window.natpass.peerConnections()), 1, 'one connection, to the SFU');
  }
  // Exactly one node's SFU carries the room.
  const counts = await Promise.all(nodes.map(async (n) => {
    const m = await (await fetch(`${n.base}/metrics`)).text();
    return Number((m.split('\n').find((l) => l.startsWith('natpass_sfu_participants ')) || ' 0').split(' ')[1]);
  }));
  assert.deepEqual(counts.slice().sort(), [0, 3], `participants per node's SFU: ${counts}`);
  for (const p of pages) await p.close();
});

test('Redis unreachable at start: natpass says so, naming the URL, and exits', async () => {
  const port = await freePort();
  const r = spawnSync(natpassBin(), ['serve', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--redis', `redis://:hunter2@127.0.0.1:${port}`], { encoding: 'utf8', timeout: 20000 });
  assert.notEqual(r.status, 0, 'exits non-zero');
  assert.match(r.stderr, new RegExp(`redis redis://\\*\\*\\*@127\\.0\\.0\\.1:${port}`), r.stderr);
  assert.doesNotMatch(r.stderr + r.stdout, /hunter2/, 'no password in the message');
});
