// A relay-only room of six in real browsers: every page relays every connection through natpass
// (selected pair's local candidate 'relay') and decodes every remote video. Each participant's
// TURN credential must carry enough allocations for one RTCPeerConnection per other participant
// (Chromium opens one allocation per local address and transport, and keeps old ones during an
// ICE restart). One Chromium with six pages keeps the cost down on a 2-core machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { serverAndBrowser, waitFor, stats, sleep, repo, joinCall } from './lib.mjs';

const env = serverAndBrowser();

const N = 6;

// Six browsers on ONE address (as in an office behind one NAT): this failed about every other
// run while the per-IP caps (64 allocations, 16 TCP connections) applied to participants and
// the page's watchdog restarted sessions whose gathering was still going (issue 18).
test('six relay-only pages in one room: every remote video decoding over TURN', { timeout: 200000 }, async () => {
  await sixPages(env.np.base, 150000);
  // Quota refusals are reported, not failed on: in about 1 run in 10 a participant still meets
  // a few 486s (per-user) while its call connects; under investigation (issue 15's note).
  const m = await (await fetch(env.np.base + '/metrics')).text();
  console.log(m.split('\n').find((l) => l.startsWith('natpass_allocate_errors_total{code="486"}')));
});

async function sixPages(serverBase, timeoutMs) {
  const started = Date.now();
  const room = 'six' + Math.random().toString(16).slice(2, 10);
  const base = serverBase.replace('127.0.0.1', 'localhost');
  const names = ['Ada', 'Ben', 'Cy', 'Dee', 'Eve', 'Fay'].slice(0, N);
  const pages = [];
  for (const n of names) {
    const p = await env.chrome.context.newPage();
    p.errors = [];
    p.on('pageerror', (e) => p.errors.push(String(e)));
    p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') p.errors.push(m.text()); });
    await p.setViewportSize({ width: 1280, height: 800 });
    await joinCall(p, `${base}/?room=${room}&name=${n}&relay=1&mode=mesh`, { smallVideo: true });
    pages.push(p);
  }
  const relayed = (s) => s.connectionState === 'connected' && s.localType === 'relay';
  const summary = async () => Promise.all(pages.map(async (p) => Object.entries(await stats(p)).map(([pid, s]) => ({ pid, ...s }))));
  let last = null;
  try {
    await waitFor(`${N} pages with ${N - 1} relayed, decoding peers each`, async () => {
      last = await summary();
      return last.every((v) => v.length === N - 1 && v.every((s) => relayed(s) && s.framesDecoded >= 10));
    }, timeoutMs, 1000);
  } catch (e) {
    const short = (last || []).map((v, i) => `${names[i]}: ` + v.map((s) => `${s.connectionState}/${s.localType}/${s.framesDecoded}`).join(' '));
    // What each page's unfinished negotiations look like, for the failure report.
    for (const [i, p] of pages.entries()) {
      const d = await p.evaluate(() => ({ me: window.natpass.me(), restarts: window.natpass.restarts(), peers: window.natpass.debug() }));
      const stuck = Object.entries(d.peers).filter(([, x]) => !x || x.connectionState !== 'connected');
      short.push(`${names[i]} (${d.me}, ${d.restarts} restarts): ${JSON.stringify(stuck)} ${JSON.stringify(p.errors.slice(-6))}`);
    }
    for (const p of pages) await p.close();
    throw new Error(`${e.message}\n${short.join('\n')}`);
  }
  // Still flowing, not just once connected: every remote video's frame count grows.
  const first = await summary();
  await sleep(4000);
  const second = await summary();
  for (let i = 0; i < N; i++) {
    const before = new Map(first[i].map((s) => [s.pid, s.framesDecoded]));
    for (const s of second[i]) {
      assert.ok(relayed(s), `${names[i]} peer ${s.pid} is relayed and connected`);
      assert.ok(s.framesDecoded > (before.get(s.pid) ?? 0), `${names[i]} peer ${s.pid} keeps decoding (${before.get(s.pid)} → ${s.framesDecoded})`);
    }
  }
  const shots = join(repo, process.env.UPDATE_SCREENSHOT ? 'docs' : 'target/e2e');
  mkdirSync(shots, { recursive: true });
  await pages[0].screenshot({ path: join(shots, 'grid-6.png') });
  console.log(`six relay-only pages connected and decoding after ${Math.round((Date.now() - started) / 1000)} s`);
  for (const p of pages) await p.close();
}
