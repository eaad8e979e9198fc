// "Relay only" mid-call: ticked on both sides at once, every connection moves onto TURN within
// seconds and the panel says so; the choice stays ticked across a reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, waitConnected, waitFor, stats, joinCall } from './lib.mjs';

const env = serverAndBrowser();

test('relay only ticked on both sides at once moves the call onto TURN and survives a reload', { timeout: 150000 }, async () => {
  const room = 'switch' + Math.random().toString(16).slice(2, 10);
  const base = env.np.base.replace('127.0.0.1', 'localhost');
  // Separate contexts: each person's choice lives in their own browser.
  const ctxA = await env.chrome.browser.newContext();
  const ctxB = await env.chrome.browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  await joinCall(a, `${base}/?room=${room}&name=Ann&relay=0`);
  await joinCall(b, `${base}/?room=${room}&name=Ben&relay=0`);
  for (const p of [a, b]) assert.notEqual(Object.values(await waitConnected(p, 1, { minFrames: 5 }))[0].localType, 'relay');

  await Promise.all([a, b].map((p) => p.evaluate(() => document.querySelector('[data-testid="relay-only"]').click())));
  const moved = Date.now();
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
