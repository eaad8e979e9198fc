// One port for everything (issue 16): natpass with `--http` and `--tls-listen` on the same
// address serves the page over HTTPS and relays TURN over TLS on that port. Two Chromium pages
// load the call from https://localhost:PORT/ and make a relay-only call whose only ICE server
// is `turns:localhost:PORT?transport=tcp`: Chromium's TURN client sends no ALPN, so the port
// tells its TLS session from a browser's by the first bytes after the handshake.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startNatpassOnePort, launchChromium, joinCall, stats, waitFor } from './lib.mjs';

const env = { one: null, chrome: null, port: 0 };

before(async () => {
  env.one = await startNatpassOnePort();
  env.port = env.one.port;
  env.chrome = await launchChromium({ extraFlags: ['--ignore-certificate-errors'] });
});

after(async () => {
  if (env.chrome) await env.chrome.close();
  if (env.one) await env.one.close();
});

test('page over HTTPS and a relay-only call over turns: on the same port', { timeout: 120000 }, async () => {
  const room = 'one' + Math.random().toString(16).slice(2, 10);
  const base = `https://localhost:${env.port}`;
  const turnsUrl = `turns:localhost:${env.port}?transport=tcp`;
  const pages = [];
  for (const name of ['Ann', 'Ben']) {
    const p = await env.chrome.context.newPage();
    p.errors = [];
    p.on('pageerror', (e) => p.errors.push(String(e)));
    p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') p.errors.push(m.text()); });
    // Keep only the turns: URLs of what the server hands out, so the call cannot relay any
    // other way (test-only: the page is unchanged, its RTCPeerConnection sees a shorter list).
    await p.addInitScript(() => {
      const Orig = window.RTCPeerConnection;
      const onlyTurns = (cfg) => {
        if (!cfg || !cfg.iceServers) return cfg;
        window.__advertised = JSON.stringify(cfg.iceServers);
        const iceServers = cfg.iceServers
          .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.startsWith('turns:')) }))
          .filter((s) => s.urls.length > 0);
        return { ...cfg, iceServers };
      };
      const setConfiguration = Orig.prototype.setConfiguration;
      Orig.prototype.setConfiguration = function (cfg) { return setConfiguration.call(this, onlyTurns(cfg)); };
      window.RTCPeerConnection = function (cfg, ...rest) { return new Orig(onlyTurns(cfg), ...rest); };
      window.RTCPeerConnection.prototype = Orig.prototype;
      Object.setPrototypeOf(window.RTCPeerConnection, Orig);
    });
    await joinCall(p, `${base}/?room=${room}&name=${name}&relay=1&mode=mesh`, { smallVideo: true });
    pages.push(p);
  }
  let last = null;
  const seen = async () => pages[0].evaluate(() => window.__advertised || null);
  try {
    await waitFor('both pages relayed over TLS and decoding', async () => {
      last = await Promise.all(pages.map((p) => stats(p)));
      return last.every((s) => {
        const v = Object.values(s);
        return v.length === 1 && v[0].connectionState === 'connected' && v[0].localType === 'relay' &&
          v[0].relayProtocol === 'tls' && v[0].framesDecoded >= 10;
      });
    }, 90000, 1000);
  } catch (e) {
    const sig = await Promise.all(pages.map((p) => p.evaluate(() => ({ sig: window.natpass.signaling(), debug: window.natpass.debug ? window.natpass.debug() : null }))));
    throw new Error(`${e.message}; stats ${JSON.stringify(last)}; advertised ${await seen()}; signaling ${JSON.stringify(sig)}; errors ${JSON.stringify(pages.map((p) => p.errors))}`);
  }
  assert.ok((await seen()).includes(turnsUrl), `the server advertises ${turnsUrl}`);
  for (const p of pages) await p.close();
});
