// The flagship: two headless Chromiums, each in a host behind its own symmetric NAT (network
// namespaces built by scripts/natlab.sh), join the demo room served by natpass on the "public"
// side with the default ICE policy. Only TURN can connect them, and getStats proves it. Then the
// NATs drop all UDP: the call connects over TURN/TCP. Needs root; skipped elsewhere.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startNatpass, waitConnected, stats, repo, CHROMIUM, joinCall } from './lib.mjs';

const PREFIX = 'npb';
const SERVER = '203.0.113.1';
const HTTP = `${SERVER}:8080`;
const env = { ...process.env, NATLAB_PREFIX: PREFIX };
const lab = (...args) => execFileSync(join(repo, 'scripts/natlab.sh'), args, { env, stdio: ['ignore', 'inherit', 'inherit'] });

function skipReason() {
  if (process.getuid && process.getuid() !== 0) return 'not root';
  for (const t of ['ip', 'nft']) if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) return `${t} not installed`;
  if (spawnSync('ip', ['netns', 'add', `${PREFIX}-probe`]).status !== 0) return 'cannot create network namespaces';
  spawnSync('ip', ['netns', 'del', `${PREFIX}-probe`]);
  return null;
}
const skip = skipReason();
if (skip && process.env.CI) throw new Error(`natlab browser test cannot run in CI: ${skip}`);

let tmp;
before(() => { if (!skip) tmp = mkdtempSync(join(tmpdir(), 'natlab-chromium-')); });
after(() => {
  if (skip) return;
  try { lab('down'); } catch { /* already down */ }
  rmSync(tmp, { recursive: true, force: true });
});

/** Chromium inside a lab host: playwright launches it through `ip netns exec` (pipe transport). */
async function browserIn(host) {
  const wrapper = join(tmp, `chromium-${host}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${PREFIX}-${host} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--mute-audio',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      `--unsafely-treat-insecure-origin-as-secure=http://${HTTP}`,
    ],
  });
}

async function call(mode, room) {
  lab('up', 'symmetric', ...(mode === 'udp-blocked' ? ['udp-blocked'] : []));
  const np = await startNatpass(
    ['--allow-peer', '203.0.113.0/24', '--allow-peer', '198.51.100.0/24'],
    {
      listen: `${SERVER}:3478`, http: HTTP, wrap: ['ip', 'netns', 'exec', `${PREFIX}-pub`], base: `http://${HTTP}`,
      // The root namespace cannot reach the lab: ask from inside a host.
      ready: () => spawnSync('ip', ['netns', 'exec', `${PREFIX}-h1`, 'python3', '-c',
        `import urllib.request; urllib.request.urlopen('http://${HTTP}/healthz', timeout=1)`]).status === 0,
    },
  ).catch((e) => { throw new Error('natpass in the lab: ' + e.message); });
  const b1 = await browserIn('h1');
  const b2 = await browserIn('h2');
  try {
    const p1 = await b1.newPage();
    const p2 = await b2.newPage();
    await joinCall(p1, `http://${HTTP}/?room=${room}&name=h1`);
    await joinCall(p2, `http://${HTTP}/?room=${room}&name=h2`);
    assert.equal(await p1.evaluate(() => window.natpass.relayOnly()), false, 'default ICE policy');
    const s1 = await waitConnected(p1, 1, { timeoutMs: 90000 });
    const s2 = await waitConnected(p2, 1, { timeoutMs: 90000 });
    const a = Object.values(s1)[0];
    const b = Object.values(s2)[0];
    console.log(`natlab browsers (${mode}): h1 route ${a.route} (local ${a.localType}/${a.relayProtocol}, remote ${a.remoteType}), frames ${a.framesDecoded}; ` +
      `h2 route ${b.route} (local ${b.localType}/${b.relayProtocol}, remote ${b.remoteType}), frames ${b.framesDecoded}`);
    for (const s of [a, b]) {
      assert.ok(s.localType === 'relay' || s.remoteType === 'relay', 'the selected pair uses a relay candidate');
      assert.equal(s.connectionState, 'connected');
      assert.ok(s.framesDecoded > 0);
    }
    if (mode === 'udp-blocked') {
      for (const s of [a, b]) {
        if (s.localType === 'relay') assert.equal(s.relayProtocol, 'tcp', 'TURN over TCP when UDP is blocked');
      }
      assert.ok([a, b].some((s) => s.localType === 'relay' && s.relayProtocol === 'tcp'));
    }
    if (mode === 'udp') {
      // The self-test page behind the NAT: STUN gives a server-reflexive candidate on the NAT's
      // public side, TURN over UDP and TCP relay, and the server saw both Allocates.
      const st = await b1.newPage();
      await st.goto(`http://${HTTP}/selftest`);
      const deadline = Date.now() + 60000;
      let r = null;
      while (!r && Date.now() < deadline) {
        r = await st.evaluate(() => (window.selftest && window.selftest.results()));
        if (!r) await new Promise((res) => setTimeout(res, 500));
      }
      assert.ok(r, 'the self-test finished');
      const srflx = r.results.stun.candidates.find((c) => c.type === 'srflx');
      assert.ok(srflx && srflx.address.startsWith('203.0.113.'), `srflx on the NAT's public side: ${JSON.stringify(r.results.stun)}`);
      assert.ok(r.results['turn-udp'].ok && r.results['turn-tcp'].ok, JSON.stringify(r.results));
      assert.ok(r.results['turn-tls'].skipped, 'no TLS offered in the lab');
      for (const t of ['udp', 'tcp']) assert.ok(r.server.some((a) => a.transport === t && a.code === null), JSON.stringify(r.server));
      console.log(`natlab selftest from h1: ${r.results.stun.verdict}; ${r.overall}`);
      await st.close();
    }
    // Still connected and decoding a moment later, not just once.
    await new Promise((r) => setTimeout(r, 2000));
    const again = Object.values(await stats(p1))[0];
    assert.equal(again.connectionState, 'connected');
    assert.ok(again.framesDecoded > a.framesDecoded);
  } finally {
    await b1.close().catch(() => {});
    await b2.close().catch(() => {});
    await np.stop();
  }
}

test('browsers behind symmetric NATs connect through natpass TURN (UDP)', { skip: skip || false, timeout: 180000 }, async () => {
  await call('udp', 'lab-udp');
});

test('browsers behind symmetric NATs with UDP blocked connect through TURN over TCP', { skip: skip || false, timeout: 180000 }, async () => {
  await call('udp-blocked', 'lab-tcp');
});
