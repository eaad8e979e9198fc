// The page's stall watchdog rule (web-demo/peer.js, Peer#stalled) in node: a session counts as
// stalled only when its negotiation has not moved for the wait (8 s for the side that started
// it, 12 s for the other), twice as long after each restart, three restarts at most. Before,
// the wait ran from the session's creation, so on a loaded machine a six-person relay-only room
// restarted sessions whose gathering was still producing candidates, and every restart took
// more TURN allocations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Peer } from '../../web-demo/peer.js';

/** A Peer's watchdog state without an RTCPeerConnection (node has none). */
function peer({ initiator, retries = 0, state = 'new', lastProgress = 0 }) {
  return Object.assign(Object.create(Peer.prototype), { initiator, retries, lastProgress, pc: { connectionState: state } });
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

test('each restart doubles the wait, and after three the session is left as it is', () => {
  assert.equal(peer({ initiator: true, retries: 1 }).stalled(15999), false);
  assert.equal(peer({ initiator: true, retries: 1 }).stalled(16001), true);
  assert.equal(peer({ initiator: true, retries: 2 }).stalled(32001), true);
  assert.equal(peer({ initiator: true, retries: 3 }).stalled(1e9), false);
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
