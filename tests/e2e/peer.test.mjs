// The page's stall watchdog rule (web-demo/peer.js, Peer#stalled) in node: a session counts as
// stalled only when its negotiation has not moved for the wait (8 s for the side that started
// it, 12 s for the other), twice as long after each restart, three restarts at most. Before,
// the wait ran from the session's creation, so on a loaded machine a six-person relay-only room
// restarted sessions whose gathering was still producing candidates, and every restart took
// more TURN allocations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Peer, acceptsReset } from '../../web-demo/peer.js';

/** A Peer's watchdog state without an RTCPeerConnection (node has none). */
function peer({ initiator, retries = 0, state = 'new', lastProgress = 0, startedAt = 0 }) {
  return Object.assign(Object.create(Peer.prototype), { initiator, retries, lastProgress, startedAt, pc: { connectionState: state } });
}

test('the wait runs from the last progress, not from the start of the session', () => {
  const p = peer({ initiator: true });
  assert.equal(p.stalled(7999), false);
  assert.equal(p.stalled(8001), true);
  p.lastProgress = 6000; // a candidate came in at 6 s
  assert.equal(p.stalled(8001), false, 'still gathering: left alone');
  assert.equal(p.stalled(14001), true);
});

test('the side that did not start the session waits longer, so both never restart at once', () => {
  const p = peer({ initiator: false });
  assert.equal(p.stalled(11999), false);
  assert.equal(p.stalled(12001), true);
});

test('each restart doubles the wait up to three, then it stays at 64 s and never gives up', () => {
  assert.equal(peer({ initiator: true, retries: 1 }).stalled(15999), false);
  assert.equal(peer({ initiator: true, retries: 1 }).stalled(16001), true);
  assert.equal(peer({ initiator: true, retries: 2 }).stalled(32001), true);
  assert.equal(peer({ initiator: true, retries: 3 }).stalled(63999), false);
  // Before, a session was left in 'new' for good after three restarts: in a six-person
  // relay-only room a participant then never saw one of the others.
  assert.equal(peer({ initiator: true, retries: 7 }).stalled(64001), true);
  assert.equal(peer({ initiator: false, retries: 7 }).stalled(64001), false, 'the other side waits 96 s');
});

test('progress that never leads anywhere holds a restart off for four waits at most', () => {
  const p = peer({ initiator: true });
  p.lastProgress = 31000; // candidates kept arriving
  assert.equal(p.stalled(31999), false);
  assert.equal(p.stalled(32001), true);
});

test('a session that is checking or connected is never a stall', () => {
  for (const state of ['connecting', 'connected', 'disconnected', 'failed']) {
    assert.equal(peer({ initiator: true, state }).stalled(1e6), false, state);
  }
});

test('progressed() moves the wait', () => {
  const p = peer({ initiator: true });
  p.progressed();
  assert.ok(p.lastProgress > 0 && p.lastProgress <= performance.now());
  assert.equal(p.stalled(p.lastProgress + 7000), false);
});

/** A Peer as the reset rule sees it: its session, its role, whether its own reset is unanswered. */
function session({ id, polite, starting }) {
  return Object.assign(Object.create(Peer.prototype), { session: id, polite, initiator: starting, pc: { connectionState: starting ? 'new' : 'connected' } });
}

test('a reset that replaces our session wins even against our own unanswered reset', () => {
  // Fay (impolite) started session A towards Dee and used up her restarts; Dee had given way to
  // A, then its watchdog started B. Before, Fay ignored B for good and both sat in 'new'.
  const fay = session({ id: 'A', polite: false, starting: true });
  assert.equal(acceptsReset(fay, { session: 'B', replaces: 'A' }), true);
});

test('crossing resets: the polite side yields, the other keeps its own', () => {
  const impolite = session({ id: 'A', polite: false, starting: true });
  const polite = session({ id: 'B', polite: true, starting: true });
  assert.equal(acceptsReset(impolite, { session: 'B', replaces: 'old' }), false, 'sent before it saw A');
  assert.equal(acceptsReset(impolite, { session: 'B' }), false, 'a first reset, no session to replace');
  assert.equal(acceptsReset(polite, { session: 'A', replaces: 'old' }), true);
});

test('a duplicate reset changes nothing; a connected or missing session always takes a new one', () => {
  assert.equal(acceptsReset(session({ id: 'A', polite: false, starting: true }), { session: 'A' }), false);
  assert.equal(acceptsReset(session({ id: 'A', polite: false, starting: false }), { session: 'B' }), true);
  assert.equal(acceptsReset(null, { session: 'B' }), true);
});
