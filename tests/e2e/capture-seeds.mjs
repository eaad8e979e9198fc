// Capture the STUN/TURN messages Debian's Chromium sends to a TURN server, as fuzzing seeds
// (issue 9: seed corpora include messages captured from Chromium).
//
//   cargo build && node tests/e2e/capture-seeds.mjs      → fuzz/seeds/stun_decode/chromium-*
//
// natpass listens on loopback; a UDP proxy in front of it records every datagram Chromium sends.
// One page holds two peer connections with iceTransportPolicy "relay" and a data channel, so
// the capture covers Binding, Allocate (unauthenticated, then signed), CreatePermission,
// ChannelBind, Send indications and Refresh. One file per distinct message kind.
import dgram from 'node:dgram';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { repo, startNatpass, launchChromium, freePort, sleep, waitFor } from './lib.mjs';

const METHODS = { 0x001: 'binding', 0x003: 'allocate', 0x004: 'refresh', 0x006: 'send', 0x008: 'create-permission', 0x009: 'channel-bind' };

const turnPort = await freePort();
const natpass = await startNatpass(['--user', 'alice:secret', '--allow-peer', '127.0.0.0/8'], { turnPort });
const proxyPort = await freePort();
const proxy = dgram.createSocket('udp4');
const upstreams = new Map();
const seen = new Map();
proxy.on('message', (msg, from) => {
  const key = `${from.address}:${from.port}`;
  let up = upstreams.get(key);
  if (!up) {
    up = dgram.createSocket('udp4');
    up.on('message', (reply) => proxy.send(reply, from.port, from.address));
    up.bind(0, '127.0.0.1');
    upstreams.set(key, up);
  }
  up.send(msg, turnPort, '127.0.0.1');
  let kind;
  if (msg[0] >> 6 === 1) {
    return; // ChannelData: not a STUN message (the stun_decode corpus is STUN only)
  } else if (msg.length >= 20 && msg.readUInt32BE(4) === 0x2112a442) {
    const type = msg.readUInt16BE(0);
    const method = (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
    const cls = ((type & 0x0100) >> 7) | ((type & 0x0010) >> 4);
    let signed = 'plain';
    for (let at = 20; at + 4 <= msg.length; at += 4 + ((msg.readUInt16BE(at + 2) + 3) & ~3)) {
      const t = msg.readUInt16BE(at);
      if (t === 0x0008 || t === 0x001c) signed = 'signed';
    }
    kind = `${METHODS[method] || 'method-' + method}-${['request', 'indication', 'success', 'error'][cls]}-${signed}`;
  } else {
    return;
  }
  if (!seen.has(kind)) seen.set(kind, Buffer.from(msg));
});
await new Promise((r) => proxy.bind(proxyPort, '127.0.0.1', r));

const chrome = await launchChromium();
try {
  const page = await chrome.context.newPage();
  await page.evaluate(async (port) => {
    const ice = [
      { urls: `stun:127.0.0.1:${port}` },
      { urls: `turn:127.0.0.1:${port}?transport=udp`, username: 'alice', credential: 'secret' },
    ];
    const a = new RTCPeerConnection({ iceServers: ice, iceTransportPolicy: 'relay' });
    const b = new RTCPeerConnection({ iceServers: ice, iceTransportPolicy: 'relay' });
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const ch = a.createDataChannel('seed');
    window.got = 0;
    b.ondatachannel = (e) => { e.channel.onmessage = () => { window.got += 1; }; };
    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    await new Promise((r) => { ch.onopen = r; });
    for (let i = 0; i < 20; i++) ch.send('seed ' + i);
    window.pcs = [a, b];
  }, proxyPort);
  await waitFor('data channel messages', () => page.evaluate(() => window.got >= 20), 30000);
  await sleep(1000);
  await page.evaluate(() => window.pcs.forEach((p) => p.close()));
  await sleep(500);
} finally {
  try { await chrome.close(); } catch (e) { console.error('closing chromium:', e.message); }
  proxy.close();
  for (const u of upstreams.values()) u.close();
  await natpass.stop();
}
const dir = join(repo, 'fuzz', 'seeds', 'stun_decode');
mkdirSync(dir, { recursive: true });
for (const [kind, msg] of [...seen].sort()) {
  writeFileSync(join(dir, `chromium-${kind}`), msg);
  console.log(`chromium-${kind}: ${msg.length} bytes`);
}
