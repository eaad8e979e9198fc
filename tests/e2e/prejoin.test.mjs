// Opening a room link and a full room, in real browsers. A link carries the room only and never
// joins by itself: the pre-join screen (name, preview, devices) comes first, and until Join is
// pressed the visitor has no signaling socket and no peer connection. A visitor with no seat
// gets the full-room screen (media off, no chat) and can wait for a seat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { serverAndBrowser, waitConnected, waitFor, sleep, repo, joinCall } from './lib.mjs';

// Two seats per room, so a third visitor finds the room full.
const env = serverAndBrowser(['--room-size', '2', '--sfu', 'false']);

const base = () => env.np.base.replace('127.0.0.1', 'localhost');
const shots = () => {
  // Written under target/; UPDATE_SCREENSHOT=1 refreshes the committed PNGs in docs/.
  const d = join(repo, process.env.UPDATE_SCREENSHOT ? 'docs' : 'target/e2e');
  mkdirSync(d, { recursive: true });
  return d;
};

// Counts what the page builds, so the test can say "nothing was sent, no peer connection".
function instrument() {
  window.__made = { pc: 0, ws: 0 };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC { constructor(...a) { super(...a); window.__made.pc += 1; } };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS { constructor(...a) { super(...a); window.__made.ws += 1; } };
}

test('a room link carries the room only and waits on the pre-join screen until Join', { timeout: 120000 }, async () => {
  // Ada creates a room in her browser.
  const adaCtx = await env.chrome.browser.newContext();
  const ada = await adaCtx.newPage();
  await ada.goto(base() + '/');
  await ada.fill('[data-testid="name-input"]', 'Ada');
  await ada.click('[data-testid="create-room"]');
  await ada.locator('[data-testid="prejoin-join"]').waitFor({ state: 'visible', timeout: 15000 });
  const link = new URL(ada.url());
  assert.deepEqual([...link.searchParams.keys()], ['room'], 'the address bar holds the room and nothing else');
  assert.equal(await ada.inputValue('[data-testid="prejoin-name"]'), 'Ada', 'her own name is remembered in her browser');
  await ada.click('[data-testid="prejoin-join"]');
  await waitFor('Ada in the room', async () => (await ada.evaluate(() => window.natpass.signaling().state)) === 'ready', 15000);

  // Ben opens the shared link in another browser: the pre-join screen, not Ada's name, no call.
  const benCtx = await env.chrome.browser.newContext();
  const ben = await benCtx.newPage();
  await ben.addInitScript(instrument);
  await ben.setViewportSize({ width: 960, height: 640 });
  await ben.goto(link.toString());
  await ben.locator('[data-testid="prejoin-join"]').waitFor({ state: 'visible', timeout: 15000 });
  assert.equal(await ben.inputValue('[data-testid="prejoin-name"]'), '', 'the link does not carry a name');
  await waitFor('camera preview playing', () => ben.evaluate(() => document.querySelector('[data-testid="prejoin-preview"] video').videoWidth > 0), 15000);
  assert.ok(await ben.locator('[data-testid="prejoin-camera"] option').count() > 0, 'camera choice');
  assert.ok(await ben.locator('[data-testid="prejoin-mic"] option').count() > 0, 'microphone choice');
  await sleep(2500);
  assert.deepEqual(await ben.evaluate(() => window.__made), { pc: 0, ws: 0 }, 'no socket and no peer connection before Join');
  assert.deepEqual(await ada.evaluate(() => window.natpass.peers()), [], 'Ada hears nothing of Ben yet');
  await ben.fill('[data-testid="prejoin-name"]', 'Ben');
  await ben.screenshot({ path: join(shots(), 'prejoin.png') });

  await ben.click('[data-testid="prejoin-join"]');
  await waitConnected(ben, 1, { minFrames: 5 });
  await waitConnected(ada, 1, { minFrames: 5 });
  assert.equal(await ada.locator('.tile:not(.local) .label').first().textContent(), 'Ben');

  // `?name=` typed by hand still pre-fills; an invalid room name is explained, not dropped.
  const p = await benCtx.newPage();
  await p.goto(base() + '/?room=abc&name=Cy');
  await p.locator('[data-testid="prejoin-join"]').waitFor({ state: 'visible', timeout: 15000 });
  assert.equal(await p.inputValue('[data-testid="prejoin-name"]'), 'Cy');
  await p.goto(base() + '/?room=' + encodeURIComponent('no spaces!'));
  await p.locator('[data-testid="invalid-room"]').waitFor({ state: 'visible', timeout: 15000 });
  assert.match(await p.locator('[data-testid="invalid-room"]').textContent(), /not a valid room name/);
  await adaCtx.close();
  await benCtx.close();
});

test('a full room shows the full-room state (no camera, no chat) and the visitor can wait for a seat', { timeout: 150000 }, async () => {
  const room = 'full' + Math.random().toString(16).slice(2, 10);
  const u = (n) => `${base()}/?room=${room}&name=${n}&relay=0`;
  const ctx = env.chrome.context;
  const a = await ctx.newPage();
  await joinCall(a, u('Ann'));
  const b = await ctx.newPage();
  await joinCall(b, u('Bo'));
  await waitConnected(a, 1, { minFrames: 5 });

  const c = await ctx.newPage();
  await c.setViewportSize({ width: 960, height: 640 });
  await joinCall(c, u('Cleo'));
  await c.locator('[data-testid="room-full"]').waitFor({ state: 'visible', timeout: 15000 });
  assert.equal(await c.evaluate(() => window.natpass.screen()), 'full');
  assert.equal(await c.evaluate(() => window.natpass.localTracks()), 0, 'camera and microphone off');
  assert.equal(await c.locator('[data-testid="chat-input"]').isVisible(), false, 'no chat box');
  assert.equal(await c.locator('[data-testid="signaling-status"]').isVisible(), false, 'no "connected" status');
  assert.deepEqual(await c.evaluate(() => window.natpass.peers()), []);
  await c.screenshot({ path: join(shots(), 'room-full.png') });

  // A retry while the room is still full lands on the same screen.
  await c.click('[data-testid="full-retry"]');
  await sleep(1500);
  assert.equal(await c.evaluate(() => window.natpass.screen()), 'full');

  // Waiting: when Bo leaves, Cleo gets the seat, her camera comes back, and she reaches Ann.
  await c.click('[data-testid="full-wait"]');
  await sleep(1000);
  await b.click('[data-testid="leave"]');
  await waitFor('Cleo seated', async () => (await c.evaluate(() => window.natpass.screen())) === 'room', 30000);
  await waitConnected(c, 1, { minFrames: 5, timeoutMs: 45000 });
  assert.ok(await c.evaluate(() => window.natpass.localTracks()) > 0, 'media on again once seated');
  await a.close();
  await b.close();
  await c.close();
});
