// The connection self-test page (/selftest, issue 16): in Chromium against a natpass on
// loopback serving the page and TURN over TLS on one port, it reports the address STUN sees
// and a relay candidate for TURN over UDP, TCP and TLS, and the server's view
// of the attempt shows one successful Allocate per TURN transport. With UDP to the TURN port
// dropped (nftables, a table of this test's own, removed on exit), it says so: STUN and TURN
// over UDP fail with the server having seen nothing, TCP and TLS still work, and the verdict
// is that calls will use TCP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startNatpassOnePort, launchChromium, waitFor, withUdpDropped } from './lib.mjs';

const env = { one: null, chrome: null };

before(async () => {
  env.one = await startNatpassOnePort();
  env.chrome = await launchChromium({ extraFlags: ['--ignore-certificate-errors'] });
});

after(async () => {
  if (env.chrome) await env.chrome.close();
  if (env.one) await env.one.close();
});

async function runSelftest() {
  const page = await env.chrome.context.newPage();
  await page.goto(`${env.one.base}/selftest`);
  const r = await waitFor('the self-test to finish', () => page.evaluate(() => (window.selftest && window.selftest.results())), 60000, 500);
  const table = await page.locator('[data-testid="selftest-table"]').innerText();
  const overall = await page.locator('[data-testid="selftest-overall"]').innerText();
  await page.close();
  return { r, table, overall };
}

test('/selftest: STUN and TURN over UDP, TCP and TLS each work, and the server saw each Allocate', { timeout: 90000 }, async () => {
  const { r, table, overall } = await runSelftest();
  const res = r.results;
  for (const k of ['stun', 'turn-udp', 'turn-tcp', 'turn-tls']) {
    assert.ok(res[k].ok, `${k}: ${res[k].verdict}\n${table}`);
  }
  // On loopback there is no NAT: the address the server sees is the browser's own, and Chromium
  // drops a server-reflexive candidate equal to a host one; the page says so (behind a NAT the
  // srflx candidate itself is checked: natlab.test.mjs).
  // (Chromium sends from each of the machine's addresses: the server may see any of them.)
  const own = res.stun.verdict.match(/your own address (\S+) /);
  const srflx = res.stun.verdict.match(/sees you as \[?(.+?)\]?:\d+$/);
  const hostHas = (ip) => res.stun.candidates.some((c) => c.type === 'host' && c.address === ip);
  assert.ok(own ? hostHas(own[1]) : !!srflx, `${res.stun.verdict}\n${table}`);
  assert.ok(res['turn-udp'].candidates.some((c) => c.type === 'relay' && (c.relayProtocol || 'udp') === 'udp'), table);
  assert.ok(res['turn-tcp'].candidates.some((c) => c.type === 'relay' && c.relayProtocol === 'tcp'), table);
  assert.ok(res['turn-tls'].candidates.some((c) => c.type === 'relay' && c.relayProtocol === 'tls'), table);
  for (const t of ['udp', 'tcp', 'tls']) {
    assert.ok(r.server.some((a) => a.transport === t && a.code === null), `the server saw a successful Allocate over ${t}: ${JSON.stringify(r.server)}`);
  }
  assert.match(res['turn-tls'].verdict, /TURN over TLS works/);
  assert.match(overall, /relay over UDP/);
  // The landing page links here.
  const page = await env.chrome.context.newPage();
  await page.goto(`${env.one.base}/`);
  assert.equal(await page.locator('[data-testid="selftest-link"]').getAttribute('href'), '/selftest');
  await page.close();
});

test('/selftest with UDP to the server blocked: says so, and that calls will use TCP', { timeout: 120000 }, async (t) => {
  if (process.getuid && process.getuid() !== 0) { t.skip('needs root for nftables'); return; }
  const turnPort = env.one.np.turnPort;
  await withUdpDropped(turnPort, 'selftest', async () => {
    const { r, table: text, overall } = await runSelftest();
    const res = r.results;
    assert.ok(!res.stun.ok && /UDP to the server is blocked/.test(res.stun.verdict), `${res.stun.verdict}\n${text}`);
    assert.ok(!res['turn-udp'].ok, text);
    assert.match(res['turn-udp'].verdict, /never saw an Allocate/, text);
    assert.ok(!r.server.some((a) => a.transport === 'udp'), `nothing arrived over UDP: ${JSON.stringify(r.server)}`);
    assert.ok(res['turn-tcp'].ok && res['turn-tls'].ok, text);
    assert.match(overall, /UDP blocked on this network: calls will use TURN over TLS/);
  });
});
