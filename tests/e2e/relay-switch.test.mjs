// "Relay only" mid-call: ticked on both sides at once, every connection moves onto TURN within
// seconds and the panel says so; the choice stays ticked across a reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, waitConnected, waitFor, stats, joinCall } from './lib.mjs';

const env = serverAndBrowser();

// Every RTCPeerConnection the page builds, so the test can read the route it really uses.
function instrument() {
  window.__pcs = [];
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC { constructor(...a) { super(...a); window.__pcs.push(this); } };
}

/** The panel's route next to the route of the open connection's selected pair. */
const panelAndTruth = (p) => p.evaluate(async () => {
  const panel = () => document.querySelector('[data-testid^="route-"]').textContent;
  const before = panel();
  const open = window.__pcs.filter((pc) => pc.connectionState !== 'closed');
  let truth = null;
  if (open.length === 1) {
    const report = await open[0].getStats();
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    report.forEach((r) => {
      if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
      const pair = byId.get(r.selectedCandidatePairId);
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      if (local) truth = local.candidateType === 'relay' || (remote && remote.candidateType === 'relay') ? 'relay' : 'direct';
    });
  }
  return { panel: before === panel() ? before : null, truth, open: open.length };
});

test('relay only ticked on both sides at once moves the call onto TURN and survives a reload', { timeout: 150000 }, async () => {
  const room = 'switch' + Math.random().toString(16).slice(2, 10);
  const base = env.np.base.replace('127.0.0.1', 'localhost');
  // Separate contexts: each person's choice lives in their own browser.
  const ctxA = await env.chrome.browser.newContext();
  const ctxB = await env.chrome.browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  for (const p of [a, b]) await p.addInitScript(instrument);
  await joinCall(a, `${base}/?room=${room}&name=Ann&relay=0`);
  await joinCall(b, `${base}/?room=${room}&name=Ben&relay=0`);
  for (const p of [a, b]) assert.notEqual(Object.values(await waitConnected(p, 1, { minFrames: 5 }))[0].localType, 'relay');

  await Promise.all([a, b].map((p) => p.evaluate(() => document.querySelector('[data-testid="relay-only"]').click())));
  const moved = Date.now();
  // From the click on, whenever the panel names a route it is the route of the connection in
  // use: never the closed direct connection's, never relay before the relay pair is selected.
  const claims = [];
  let relayedAt = null;
  while (Date.now() - moved < 20000 && (relayedAt === null || Date.now() - relayedAt < 3000)) {
    for (const [who, p] of [['Ann', a], ['Ben', b]]) {
      const { panel, truth, open } = await panelAndTruth(p);
      if (panel === null || open !== 1) continue; // the panel changed while reading, or a switch is under way
      const named = panel.startsWith('relay') ? 'relay' : panel.startsWith('direct') ? 'direct' : null;
      claims.push({ who, panel, truth, ms: Date.now() - moved });
      if (named !== null) assert.equal(named, truth, `${who}'s panel says "${panel}" while the connection uses ${truth} (${JSON.stringify(claims.slice(-4))})`);
    }
    if (relayedAt === null && claims.filter((c) => c.truth === 'relay' && c.panel.startsWith('relay')).length >= 2) relayedAt = Date.now();
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(claims.some((c) => c.panel.startsWith('relay')), 'the panel got to relay');
  for (const p of [a, b]) await waitConnected(p, 1, { relay: true, minFrames: 5, timeoutMs: 20000 });
  console.log(`both sides relayed ${Date.now() - moved} ms after the switch`);
  for (const p of [a, b]) {
    const s = Object.values(await stats(p))[0];
    assert.equal(s.localType, 'relay');
    assert.match(await p.locator('[data-testid^="route-"]').first().textContent(), /^relay/, 'the panel says relay');
  }

  // Ben reloads: still ticked, still relayed.
  await b.reload();
  await waitFor('Ben back in the room', async () => (await b.evaluate(() => window.natpass.screen())) === 'room', 20000);
  assert.equal(await b.locator('[data-testid="relay-only"]').isChecked(), true, 'ticked after the reload');
  assert.equal(await b.evaluate(() => window.natpass.relayOnly()), true);
  await waitConnected(b, 1, { relay: true, minFrames: 5, timeoutMs: 45000 });
  await ctxA.close();
  await ctxB.close();
});
