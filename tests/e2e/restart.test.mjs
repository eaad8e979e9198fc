// After the server restarts, every page rejoins under a new identity: one tile per participant,
// and no connection of the dead identities left open (it would keep sending video twice).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, startNatpass, waitConnected, waitFor, joinCall } from './lib.mjs';

const env = serverAndBrowser();

// Every RTCPeerConnection the page builds, to count the ones still open.
function instrument() {
  window.__pcs = [];
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC { constructor(...a) { super(...a); window.__pcs.push(this); } };
}
const openPcs = (p) => p.evaluate(() => window.__pcs.filter((pc) => pc.connectionState !== 'closed').length);
const remoteTiles = (p) => p.locator('.tile:not(.local)').count();

test('a server restart leaves one tile and one connection per participant', { timeout: 180000 }, async () => {
  const room = 'restart' + Math.random().toString(16).slice(2, 10);
  const base = env.np.base.replace('127.0.0.1', 'localhost');
  const pages = [];
  for (const n of ['Ann', 'Ben', 'Cy']) {
    const p = await env.chrome.context.newPage();
    await p.addInitScript(instrument);
    await joinCall(p, `${base}/?room=${room}&name=${n}&relay=0`);
    pages.push(p);
  }
  for (const p of pages) await waitConnected(p, 2, { minFrames: 5 });
  const before = await Promise.all(pages.map((p) => p.evaluate(() => window.natpass.me())));

  const { turnPort, httpPort } = env.np;
  await env.np.stop();
  env.np = await startNatpass([], { turnPort, httpPort });

  for (const p of pages) {
    await waitFor('a new identity', async () => {
      const me = await p.evaluate(() => window.natpass.me());
      return me && !before.includes(me);
    }, 45000);
  }
  for (const p of pages) await waitConnected(p, 2, { minFrames: 5, timeoutMs: 60000 });
  // Let anything stale show itself: a ghost tile stayed for good before.
  await new Promise((r) => setTimeout(r, 3000));
  for (const p of pages) {
    const me = await p.evaluate(() => window.natpass.me());
    assert.equal(await remoteTiles(p), 2, `one remote tile per participant at ${me}`);
    assert.equal(await openPcs(p), 2, `one open peer connection per participant at ${me}`);
    const peers = await p.evaluate(() => window.natpass.peers());
    assert.ok(peers.every((pid) => !before.includes(pid)), 'no peer of a dead identity');
  }
  for (const p of pages) await p.close();
});
