// The call in real browsers: headless Debian Chromium, fake camera/microphone, natpass's own
// signaling and TURN. Two pages with "relay only" → relay/relay pair, frames decoded both ways,
// chat delivered; a third joins and everyone sees everyone; a reload recovers the call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { serverAndBrowser, waitConnected, waitFor, stats, repo, joinCall } from './lib.mjs';

const env = serverAndBrowser();

const room = 'e2e' + Math.random().toString(16).slice(2, 12);
const url = (name, relay = true) => `${env.np.base.replace('127.0.0.1', 'localhost')}/?room=${room}&name=${name}${relay ? '&relay=1' : '&relay=0'}`;

test('relay-only call: relay candidates, frames both ways, chat, third participant, reload', { timeout: 240000 }, async () => {
  const ctx = env.chrome.context;
  const logs = [];
  ctx.on('page', (p) => p.on('console', (m) => { if (m.type() !== 'log') logs.push(`${p.url().split('name=')[1]}: ${m.text()}`); }));
  process.on('exit', () => { if (process.exitCode) console.log('page console:\n' + logs.slice(-40).join('\n')); });
  const a = await ctx.newPage();
  await a.setViewportSize({ width: 960, height: 640 });
  await joinCall(a, url('Alice'));
  const b = await ctx.newPage();
  await joinCall(b, url('Bob'));

  const sa = await waitConnected(a, 1, { relay: true });
  const sb = await waitConnected(b, 1, { relay: true });
  for (const s of [sa, sb]) {
    const p = Object.values(s)[0];
    assert.equal(p.localType, 'relay', 'selected local candidate is a natpass relay');
    assert.equal(p.remoteType, 'relay', 'the remote side is relayed too');
    assert.equal(p.relayProtocol, 'udp');
    assert.ok(p.framesDecoded > 0);
  }
  // The connection panel says relay.
  const route = await a.locator('[data-testid^="route-"]').first().textContent();
  assert.match(route, /^relay/);
  assert.equal(await a.locator('[data-testid="relay-only"]').isChecked(), true);

  // Chat over the data channel (or signaling fallback) arrives.
  await a.fill('[data-testid="chat-input"]', 'hello from alice');
  await a.click('[data-testid="chat-send"]');
  await waitFor('chat at Bob', async () => (await b.locator('[data-testid="chat-log"]').textContent()).includes('hello from alice'));
  await b.fill('[data-testid="chat-input"]', '<b>bob</b> answers');
  await b.click('[data-testid="chat-send"]');
  await waitFor('chat at Alice', async () => (await a.locator('[data-testid="chat-log"]').textContent()).includes('<b>bob</b> answers'));
  assert.equal(await a.locator('[data-testid="chat-log"] b').count(), 0, 'chat is text, never markup');

  // A screenshot of a real call for the README (two live tiles).
  await waitFor('frames keep coming', async () => Object.values(await stats(a))[0].framesDecoded > sa[Object.keys(sa)[0]].framesDecoded + 20);
  // Written under target/; UPDATE_SCREENSHOT=1 refreshes the committed docs/call.png.
  const shots = join(repo, process.env.UPDATE_SCREENSHOT ? 'docs' : 'target/e2e');
  mkdirSync(shots, { recursive: true });
  await a.screenshot({ path: join(shots, 'call.png') });

  // A third participant: everyone sees everyone.
  const c = await ctx.newPage();
  await joinCall(c, url('Carol'));
  await waitConnected(c, 2, { relay: true });
  await waitConnected(a, 2, { relay: true });
  await waitConnected(b, 2, { relay: true });
  assert.equal(await a.locator('[data-testid="tiles"] .tile').count(), 3, 'local tile and two remote tiles');

  // Bob reloads: the call recovers for everyone.
  const bobId = await b.evaluate(() => window.natpass.me());
  await b.reload();
  await waitConnected(b, 2, { relay: true, minFrames: 5 });
  const sameId = await b.evaluate(() => window.natpass.me());
  assert.equal(sameId, bobId, 'resumed identity after reload');
  const framesOf = async (page) => (await stats(page))[bobId]?.framesDecoded ?? 0;
  const before = await framesOf(a);
  await waitFor('Alice decodes Bob again', async () => (await framesOf(a)) > before + 10 && (await stats(a))[bobId].connectionState === 'connected', 45000);
  await waitFor('Carol decodes Bob again', async () => (await stats(c))[bobId]?.connectionState === 'connected' && (await stats(c))[bobId].framesDecoded > 10, 45000);
  assert.equal(await a.locator('[data-testid="tiles"] .tile').count(), 3, 'no stale tile after the reload');
  await c.close();
  await waitFor('Carol gone at Alice', async () => Object.keys(await stats(a)).length === 1, 45000);
});

test('without relay-only the same page connects too (host candidates on loopback)', { timeout: 120000 }, async () => {
  const ctx = env.chrome.context;
  const r2 = 'direct' + Math.random().toString(16).slice(2, 10);
  const u = (n) => `${env.np.base.replace('127.0.0.1', 'localhost')}/?room=${r2}&name=${n}&relay=0`;
  const a = await ctx.newPage();
  await joinCall(a, u('Ann'));
  const b = await ctx.newPage();
  await joinCall(b, u('Ben'));
  const s = await waitConnected(a, 1);
  assert.ok(Object.values(s)[0].framesDecoded > 0);
  await a.close();
  await b.close();
});

test('signals sent while the signaling socket is down are delivered after the resume', { timeout: 120000 }, async () => {
  const ctx = env.chrome.context;
  const r3 = 'drop' + Math.random().toString(16).slice(2, 10);
  const u = (n) => `${env.np.base.replace('127.0.0.1', 'localhost')}/?room=${r3}&name=${n}&relay=0`;
  const a = await ctx.newPage();
  await joinCall(a, u('Ann'));
  const b = await ctx.newPage();
  await joinCall(b, u('Ben'));
  const before = Object.values(await waitConnected(a, 1))[0];
  assert.notEqual(before.localType, 'relay', 'starts on a direct route');
  const me = await a.evaluate(() => window.natpass.me());
  const restartsBefore = [await a.evaluate(() => window.natpass.restarts()), await b.evaluate(() => window.natpass.restarts())];
  // Drop Ann's socket and, while it is down, switch to relay only: the new session's reset and
  // offer are written while the socket is closed; they must wait for the resume, not vanish.
  await a.evaluate(() => {
    window.natpass.dropSignaling();
    document.querySelector('[data-testid="relay-only"]').click();
  });
  await waitFor('the new session queued', async () => (await a.evaluate(() => window.natpass.signaling())).pending > 0, 5000, 50)
    .catch(() => { /* it may already be out if the socket came back very fast */ });
  await waitFor('Ann back in the room', async () => (await a.evaluate(() => window.natpass.signaling())).state === 'ready', 20000);
  assert.equal(await a.evaluate(() => window.natpass.me()), me, 'resumed identity');
  await waitConnected(a, 1, { relay: true, minFrames: 1, timeoutMs: 45000 });
  await waitFor('Ben sees the relayed route too', async () => {
    const s = Object.values(await stats(b))[0];
    return s && s.connectionState === 'connected' && s.remoteType === 'relay';
  }, 45000);
  // Had the reset and offer been lost, the new connection would have sat in 'new' until the
  // watchdog started it over.
  assert.equal(await a.evaluate(() => window.natpass.restarts()), restartsBefore[0], 'no watchdog restart needed');
  assert.equal(await b.evaluate(() => window.natpass.restarts()), restartsBefore[1]);
  await a.close();
  await b.close();
});

test('the page takes the room rule and limits from the server', async () => {
  const r = await fetch(`${env.np.base}/api/config`);
  assert.equal(r.status, 200);
  const c = await r.json();
  assert.equal(c.room.pattern, '^[A-Za-z0-9_-]{1,64}$');
  assert.ok(c.signaling.rate > 0 && c.signaling.rate < 20, 'paced under the 20/s server limit');
  const p = await env.chrome.context.newPage();
  await p.goto(env.np.base.replace('127.0.0.1', 'localhost') + '/');
  assert.equal(await p.locator('[data-testid="room-input"]').getAttribute('pattern'), c.room.pattern);
  assert.equal(await p.locator('[data-testid="room-input"]').getAttribute('maxlength'), String(c.room.maxLength));
  await p.close();
});

test('the credential endpoint hands out working iceServers', async () => {
  const r = await fetch(`${env.np.base}/api/ice-servers`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-security-policy'), /default-src 'self'/);
  const j = await r.json();
  assert.equal(j.ttl, 600);
  const turn = j.iceServers.find((s) => s.username);
  assert.ok(turn.urls.some((u) => u.startsWith('turn:') && u.endsWith('transport=udp')));
  assert.match(turn.username, /^\d+:web$/);
});

test('with WebSocket blocked (long-polling only) a call still connects', { timeout: 120000 }, async () => {
  const ctx = env.chrome.context;
  const r = 'poll' + Math.random().toString(16).slice(2, 10);
  const u = (name) => `${env.np.base.replace('127.0.0.1', 'localhost')}/?room=${r}&name=${name}&relay=0&transport=polling`;
  const pages = [];
  for (const name of ['Pia', 'Pol']) {
    const p = await ctx.newPage();
    // As behind a proxy that refuses WebSocket upgrades.
    await p.route(/\/socket\.io\/.*transport=websocket/, (route) => route.abort());
    await joinCall(p, u(name));
    pages.push(p);
  }
  for (const p of pages) await waitConnected(p, 1, { minFrames: 5 });
  for (const p of pages) assert.equal((await p.evaluate(() => window.natpass.signaling())).transport, 'polling');
  for (const p of pages) await p.close();
});
