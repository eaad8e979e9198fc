// The page's signaling module (web-demo/signaling.js) without a browser: a fake WebSocket and
// a fake clock. Messages sent while the socket is not open are kept, nothing queued reaches a
// new socket before the resume join, stale signals of a lost identity are dropped, and the
// outbox keeps the pace served by the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Signaling } from '../../web-demo/signaling.js';

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(t) {
    assert.equal(this.readyState, 1, 'send only on an open socket');
    this.sent.push(JSON.parse(t));
  }
  close() { if (this.readyState !== 3) { this.readyState = 3; this.onclose && this.onclose(); } }
  // Test side:
  open() { this.readyState = 1; this.onopen(); }
  deliver(m) { this.onmessage({ data: JSON.stringify(m) }); }
  types() { return this.sent.map((m) => m.type); }
}

function harness({ rate = 15, burst = 75, maxMessage = 65536 } = {}) {
  FakeSocket.all = [];
  let now = 0;
  const timers = [];
  const events = [];
  const sig = new Signaling({
    url: 'ws://test/ws',
    pacing: { rate, burst },
    maxMessage,
    joinRequest: () => ({ type: 'join', room: 'r', name: 'Ann', resume: 'tok' }),
    onJoined: (m, resumed) => events.push(['joined', m.you, resumed]),
    onMessage: (m) => events.push(['message', m.type]),
    WebSocketImpl: FakeSocket,
    now: () => now,
    setTimer: (f, ms) => { const t = { at: now + ms, f }; timers.push(t); return t; },
    clearTimer: (t) => { const i = timers.indexOf(t); if (i >= 0) timers.splice(i, 1); },
    random: () => 0,
  });
  /** Advance the fake clock by `ms`, running due timers in order. */
  const advance = (ms) => {
    const end = now + ms;
    for (;;) {
      timers.sort((a, b) => a.at - b.at);
      if (!timers.length || timers[0].at > end) break;
      const t = timers.shift();
      now = t.at;
      t.f();
    }
    now = end;
  };
  const socket = () => FakeSocket.all[FakeSocket.all.length - 1];
  return { sig, advance, socket, events };
}

test('messages sent before the socket is open are delivered after the join, not dropped', () => {
  const { sig, socket } = harness();
  sig.start();
  sig.send({ type: 'chat', text: 'early' });
  assert.equal(socket().sent.length, 0);
  socket().open();
  assert.deepEqual(socket().types(), ['join'], 'only the join while joining');
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  assert.deepEqual(socket().types(), ['join', 'chat']);
  assert.equal(socket().sent[1].text, 'early');
});

test('after a reconnect the resume join goes first, then what was queued, in order', () => {
  const { sig, socket, advance, events } = harness();
  sig.start();
  socket().open();
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  socket().close();
  // While disconnected: an answer and candidates for a peer.
  sig.send({ type: 'signal', to: 'p2', data: { description: 'answer' } });
  sig.send({ type: 'signal', to: 'p2', data: { candidates: [1] } });
  assert.equal(sig.state, 'closed');
  advance(600);
  const s2 = socket();
  assert.notEqual(s2, FakeSocket.all[0], 'reconnected on a new socket');
  s2.open();
  assert.deepEqual(s2.types(), ['join'], 'nothing queued precedes the resume join');
  assert.equal(s2.sent[0].resume, 'tok');
  s2.deliver({ type: 'joined', you: 'p1', participants: [] });
  assert.deepEqual(s2.types(), ['join', 'signal', 'signal']);
  assert.equal(s2.sent[1].data.description, 'answer');
  assert.deepEqual(events.filter((e) => e[0] === 'joined'), [['joined', 'p1', false], ['joined', 'p1', true]]);
});

test('a new identity after a reconnect drops the old identity\'s signals but keeps chat', () => {
  const { sig, socket, advance, events } = harness();
  sig.start();
  socket().open();
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  socket().close();
  sig.send({ type: 'signal', to: 'p2', data: { description: 'stale' } });
  sig.send({ type: 'chat', text: 'still here' });
  advance(600);
  socket().open();
  socket().deliver({ type: 'joined', you: 'p9', participants: [] });
  assert.deepEqual(socket().types(), ['join', 'chat']);
  assert.deepEqual(events.at(-1), ['joined', 'p9', false]);
});

test('the outbox keeps the served pace: a burst, then the rate', () => {
  const { sig, socket, advance } = harness({ rate: 10, burst: 5 });
  sig.start();
  socket().open(); // the join uses one token
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  for (let i = 0; i < 20; i++) sig.send({ type: 'signal', to: 'p2', data: { i } });
  assert.equal(socket().sent.length, 5, 'join + 4 of the burst');
  advance(1000);
  const afterOne = socket().sent.length;
  assert.ok(afterOne >= 14 && afterOne <= 15, `about 10 more in a second, got ${afterOne - 5}`);
  advance(1000);
  assert.equal(socket().sent.length, 21, 'all delivered, none dropped');
  assert.deepEqual(socket().sent.slice(1).map((m) => m.data.i), [...Array(20).keys()], 'in order');
});

test('a message larger than the server accepts is refused locally, the socket stays up', () => {
  const { sig, socket } = harness({ maxMessage: 100 });
  sig.start();
  socket().open();
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  const warn = console.warn;
  console.warn = () => {};
  try {
    assert.equal(sig.send({ type: 'chat', text: 'x'.repeat(200) }), null);
  } finally {
    console.warn = warn;
  }
  assert.ok(sig.send({ type: 'chat', text: 'ok' }) > 0);
  assert.deepEqual(socket().types(), ['join', 'chat']);
});

test('other messages reach the page; stop() sends the leave and never reconnects', () => {
  const { sig, socket, advance, events } = harness();
  sig.start();
  socket().open();
  socket().deliver({ type: 'joined', you: 'p1', participants: [] });
  socket().deliver({ type: 'participant-joined', participant: { id: 'p2', name: 'B' } });
  assert.deepEqual(events.at(-1), ['message', 'participant-joined']);
  const s = socket();
  sig.stop({ type: 'leave' });
  assert.deepEqual(s.types(), ['join', 'leave']);
  advance(60000);
  assert.equal(FakeSocket.all.length, 1, 'no reconnect after stop');
});
