// Upload per participant, mesh vs SFU, for rooms of 2 to 6 (docs/performance.md). Not a test:
// run by hand (`node bench-upload.mjs`, NATPASS_BIN as for the tests). One natpass, one
// Chromium; per room size and mode: N pages at 320x180 (the tests' size), wait until every page
// decodes every other participant, then each page's video bytes sent over 10 s.
import { startNatpass, launchChromium, joinCall, waitFor, stats, sleep } from './lib.mjs';

const SIZES = (process.env.SIZES || '2,3,4,5,6').split(',').map(Number);
const WINDOW_MS = 10000;

const np = await startNatpass();
const chrome = await launchChromium();
const base = np.base.replace('127.0.0.1', 'localhost');
const sent = (p) => p.evaluate(async () => (await window.natpass.outboundVideo()).reduce((a, o) => a + o.bytesSent, 0));
const rows = [];
try {
  for (const n of SIZES) {
    const row = { n };
    for (const mode of ['mesh', 'sfu']) {
      const room = `up${mode}${n}x` + Math.random().toString(16).slice(2, 8);
      const pages = [];
      for (let i = 0; i < n; i++) {
        const p = await chrome.context.newPage();
        await joinCall(p, `${base}/?room=${room}&name=p${i}&mode=${mode}`, { smallVideo: true });
        pages.push(p);
      }
      await waitFor(`${n} pages (${mode}) decoding`, async () => {
        const v = await Promise.all(pages.map(stats));
        return v.every((s) => Object.keys(s).length === n - 1 && Object.values(s).every((x) => x.framesDecoded >= 30));
      }, 120000, 1000);
      await sleep(3000); // past the bandwidth estimators' ramp-up
      const a = await Promise.all(pages.map(sent));
      const t0 = Date.now();
      await sleep(WINDOW_MS);
      const b = await Promise.all(pages.map(sent));
      const secs = (Date.now() - t0) / 1000;
      const kbps = b.map((x, i) => ((x - a[i]) * 8) / secs / 1000);
      row[mode] = Math.round(kbps.reduce((x, y) => x + y, 0) / n);
      row[mode + 'Pcs'] = await pages[0].evaluate(() => window.natpass.peerConnections());
      for (const p of pages) await p.close();
    }
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  await chrome.close();
  await np.stop();
}
console.log('| people | mesh: video upload per participant (kbit/s), connections | SFU: upload (kbit/s), connections | mesh ÷ SFU |');
console.log('|---|---|---|---|');
for (const r of rows) console.log(`| ${r.n} | ${r.mesh} (${r.meshPcs}) | ${r.sfu} (${r.sfuPcs}) | ${(r.mesh / r.sfu).toFixed(2)} |`);
