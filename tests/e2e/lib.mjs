// Helpers for the browser tests: start natpass, start Debian's Chromium (never a downloaded
// browser) and connect playwright-core to it over CDP, poll until a condition holds.
import { spawn } from 'node:child_process';
import { before, after } from 'node:test';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, '..', '..');

export function natpassBin() {
  if (process.env.NATPASS_BIN) return process.env.NATPASS_BIN;
  for (const p of ['target/debug/natpass', 'target/release/natpass']) {
    const f = join(repo, p);
    if (existsSync(f)) return f;
  }
  throw new Error('natpass binary not built (cargo build)');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, timeoutMs = 30000, everyMs = 250) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeoutMs) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last && last.message ? last.message : last)}`);
}

/** Start natpass with STUN/TURN and HTTP on free loopback ports (or as `opts` say). */
export async function startNatpass(extra = [], opts = {}) {
  const turnPort = opts.turnPort || (await freePort());
  const httpPort = opts.httpPort || (await freePort());
  const listen = opts.listen || `127.0.0.1:${turnPort}`;
  const http = opts.http || `127.0.0.1:${httpPort}`;
  const args = ['serve', '--listen', listen, '--http', http, '--log', process.env.NATPASS_LOG || 'warn', ...extra];
  const cmd = opts.wrap ? [...opts.wrap, natpassBin(), ...args] : [natpassBin(), ...args];
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'inherit', 'inherit'] });
  const base = opts.base || `http://${http}`;
  await waitFor('natpass HTTP', async () => {
    if (child.exitCode !== null) throw new Error('natpass exited with ' + child.exitCode);
    if (opts.ready) return opts.ready();
    const r = await fetch(`${base}/healthz`);
    return r.ok;
  }, 15000, 100);
  return {
    child, turnPort, httpPort, base,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        // natpass drains for drain-seconds (5) before it exits: wait past that, then kill, and
        // in both cases until the process is gone, so its ports are free for whatever follows.
        await Promise.race([exited, sleep(8000)]);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
      }
    },
  };
}

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function chromiumFlags(userDataDir, extra = []) {
  return [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-extensions', '--mute-audio',
    // 15 fps fake camera: a six-page room is 30 encoders and 30 decoders on two cores.
    '--use-fake-device-for-media-stream=fps=15', '--use-fake-ui-for-media-stream',
    // Every page of the shared browser is a participant: none is throttled as a background tab
    // (its watchdog, signaling pacing and stats timers would run once a second, or a minute).
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    // Three simulcast layers from the tests' small (320x180) video: Chromium otherwise caps
    // the layer count by resolution (one layer below 480x270).
    '--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/',
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    `--user-data-dir=${userDataDir}`, '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
    ...extra,
    'about:blank',
  ];
}

// Chromium runs in its own process group and would outlive this process if it were killed
// (`timeout node --test …`) and load the machine for good: every group still running is
// killed when this process exits or is told to stop.
const browserGroups = new Set();
const reapBrowsers = () => {
  for (const pid of browserGroups) { try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ } }
  browserGroups.clear();
};
process.once('exit', reapBrowsers);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(sig, () => { reapBrowsers(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15)); });
}

/** Spawn Chromium (optionally wrapped, e.g. `ip netns exec NS`) and connect over CDP. */
export async function launchChromium({ wrap = [], extraFlags = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'natpass-chromium-'));
  const cmd = [...wrap, CHROMIUM, ...chromiumFlags(dir, extraFlags)];
  // Its own process group, so the kill takes Chromium's helper processes with it.
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  browserGroups.add(child.pid);
  child.once('exit', () => browserGroups.delete(child.pid));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const portFile = join(dir, 'DevToolsActivePort');
  const port = await waitFor('DevToolsActivePort', () => {
    if (child.exitCode !== null) throw new Error('chromium exited: ' + stderr);
    if (!existsSync(portFile)) return null;
    const n = parseInt(readFileSync(portFile, 'utf8').split('\n')[0], 10);
    return Number.isFinite(n) && n > 0 ? n : null;
  }, 30000, 100);
  const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`);
  return {
    browser, child,
    context: browser.contexts()[0],
    close: async () => {
      // Bounded: a CDP close can hang when the browser is busy tearing pages down.
      await Promise.race([browser.close().catch(() => { /* already gone */ }), sleep(5000)]);
      try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(3000)]);
      // A helper Chromium left behind can hold the stderr pipe open, which would keep this
      // process alive after the tests: let go of it.
      child.stderr.destroy();
      child.unref();
      // A helper can still be writing into the profile for a moment after the kill: retry,
      // and never fail a test over a temporary directory left behind.
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 250 });
      } catch (e) {
        console.error(`leaving ${dir}: ${e.message}`);
      }
    },
  };
}

/** The call stats a page exposes (window.natpass.stats()). */
export const stats = (page) => page.evaluate(() => window.natpass.stats());

/** Wait until `page` has `n` peers, all connected with decoded frames (optionally relayed). */
export async function waitConnected(page, n, { relay = false, minFrames = 10, timeoutMs = 90000 } = {}) {
  let seen = null;
  try {
    return await waitFor(`${n} connected peer(s)`, async () => {
      const s = await stats(page);
      seen = s;
      const v = Object.values(s);
      if (v.length !== n) return null;
      const ok = v.every((p) => p.connectionState === 'connected' && p.framesDecoded >= minFrames &&
        (!relay || p.localType === 'relay'));
      return ok ? s : null;
    }, timeoutMs, 500);
  } catch (e) {
    const debug = await page.evaluate(() => (window.natpass.debug ? window.natpass.debug() : null)).catch(() => null);
    throw new Error(`${e.message}; page ${page.url()} saw ${JSON.stringify(seen)}; negotiation ${JSON.stringify(debug)}`);
  }
}

/** Open a room link and press Join on its pre-join screen (links never join by themselves). */
export async function joinCall(page, url, { timeoutMs = 15000, smallVideo = false } = {}) {
  if (smallVideo) await useSmallVideo(page);
  await page.goto(url);
  const join = page.locator('[data-testid="prejoin-join"]');
  await join.waitFor({ state: 'visible', timeout: timeoutMs });
  await join.click({ timeout: timeoutMs });
}

/**
 * Make the page's camera 320×180 (its own constraints ask for 640×360): rooms of six browsers
 * on two cores are 30 encoders and 30 decoders, a quarter of the pixels each. Test-only: the
 * page is not changed, its getUserMedia is wrapped before it loads.
 */
export async function useSmallVideo(page) {
  await page.addInitScript(() => {
    const md = navigator.mediaDevices;
    const orig = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => orig(c && c.video ? { ...c, video: { ...(typeof c.video === 'object' ? c.video : {}), width: 320, height: 180 } } : c);
  });
}

/**
 * The frame most browser test files share: one natpass (with `natpassArgs`) and one Chromium
 * for the whole file, started before its tests and stopped after them. The returned object's
 * `np` and `chrome` are set once started; a test may replace `np` (a restarted server) and
 * the replacement is the one stopped.
 */
export function serverAndBrowser(natpassArgs = []) {
  const env = { np: null, chrome: null };
  before(async () => {
    env.np = await startNatpass(natpassArgs);
    env.chrome = await launchChromium();
  });
  after(async () => {
    if (env.chrome) await env.chrome.close();
    if (env.np) await env.np.stop();
  });
  return env;
}

/**
 * natpass with the page and TURN over TLS on one port (`--http` = `--tls-listen`) and a
 * certificate for localhost made with openssl: `{ np, port, base, close }`. Browsers need
 * `--ignore-certificate-errors`.
 */
export async function startNatpassOnePort(extra = []) {
  const { execFileSync } = await import('node:child_process');
  const https = await import('node:https');
  const dir = mkdtempSync(join(tmpdir(), 'natpass-oneport-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  const ca = readFileSync(cert);
  const port = await freePort();
  const shared = `127.0.0.1:${port}`;
  const np = await startNatpass(['--tls-listen', shared, '--tls-cert', cert, '--tls-key', key, ...extra], {
    http: shared,
    base: `https://localhost:${port}`,
    ready: () => new Promise((resolve) => {
      https.get({ host: '127.0.0.1', servername: 'localhost', port, path: '/healthz', ca }, (r) => {
        r.resume();
        resolve(r.statusCode === 200);
      }).on('error', () => resolve(false));
    }),
  });
  return {
    np, port, base: `https://localhost:${port}`,
    close: async () => {
      await np.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Run `fn` while this machine drops outgoing UDP to `port` (nftables, in a table of the
 * caller's own, removed when `fn` ends or the process exits, a killed run included). Root only.
 */
export async function withUdpDropped(port, tag, fn) {
  const { execFileSync } = await import('node:child_process');
  const table = `natpass_${tag}_${process.pid}`;
  const nft = (args) => execFileSync('nft', args, { stdio: 'pipe' });
  nft(['add', 'table', 'inet', table]);
  const drop = () => { try { nft(['delete', 'table', 'inet', table]); } catch { /* gone */ } };
  process.once('exit', drop);
  try {
    nft(['add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0 ; policy accept ; }']);
    nft(['add', 'rule', 'inet', table, 'out', 'udp', 'dport', String(port), 'drop']);
    return await fn();
  } finally {
    drop();
    process.removeListener('exit', drop);
  }
}
