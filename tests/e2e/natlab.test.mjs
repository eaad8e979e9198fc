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
