// The connection self-test (/selftest): gather ICE candidates against this natpass with one
// transport at a time (STUN; TURN over UDP, TCP, TLS), time the first server-reflexive and
// relay candidates, show the browser's candidate errors with what they usually mean, ask the
// server what it saw from this test's own credential, and give one verdict per transport.
// window.selftest.results() returns the last run's results (tests read it).

const TIMEOUT_MS = 10000;
const KINDS = [
  { key: 'stun', label: 'STUN (UDP)', want: 'srflx' },
  { key: 'turn-udp', label: 'TURN over UDP', want: 'relay', transport: 'udp' },
  { key: 'turn-tcp', label: 'TURN over TCP', want: 'relay', transport: 'tcp' },
  { key: 'turn-tls', label: 'TURN over TLS', want: 'relay', transport: 'tls' },
];
const MEANING = {
  401: 'the credential was refused',
  403: 'forbidden by the server',
  437: 'allocation mismatch',
  438: 'stale nonce (the browser retries)',
  486: 'allocation quota reached',
  508: 'server out of capacity (or draining)',
  701: 'server not reachable over this transport in time',
};

let last = null;

function candidateLine(c) {
  const relay = c.type === 'relay' && c.relayProtocol ? ` via ${c.relayProtocol}` : '';
  // Browsers hide the related address (0.0.0.0) unless the page may use the camera.
  const seenAs = c.type !== 'host' && c.relatedAddress && c.relatedAddress !== '0.0.0.0' ? ` (for ${c.relatedAddress})` : '';
  return `${c.type} ${c.protocol} ${c.address || '(hidden)'}:${c.port}${relay}${seenAs}`;
}

/** Gather with only `urls` (and the credential for TURN) until complete or the timeout. */
async function gather(urls, cred, relayOnly) {
  const server = { urls };
  if (cred) Object.assign(server, cred);
  const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: relayOnly ? 'relay' : 'all' });
  const started = performance.now();
  const out = { candidates: [], errors: [], firstMs: {} };
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    const c = e.candidate;
    const item = {
      type: c.type, protocol: c.protocol, address: c.address, port: c.port,
      relayProtocol: c.relayProtocol || null, relatedAddress: c.relatedAddress || null,
    };
    out.candidates.push(item);
    if (out.firstMs[c.type] === undefined) out.firstMs[c.type] = Math.round(performance.now() - started);
  };
  pc.onicecandidateerror = (e) => {
    out.errors.push({ code: e.errorCode, text: e.errorText, url: e.url });
  };
  pc.createDataChannel('selftest');
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    const done = () => resolve();
    const timer = setTimeout(done, TIMEOUT_MS);
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); done(); }
    };
  });
  out.ms = Math.round(performance.now() - started);
  pc.close();
  return out;
}

function verdict(kind, r, seen, results) {
  const got = r.candidates.some((c) => c.type === kind.want && (kind.want !== 'relay' || !kind.transport || (c.relayProtocol || 'udp') === kind.transport));
  if (kind.key === 'stun') {
    if (got) {
      const c = r.candidates.find((x) => x.type === 'srflx');
      return { ok: true, text: `STUN works: the server sees you as ${c.address}:${c.port}` };
    }
    // No NAT between the browser and the server: the address the server sees is one of the
    // browser's own, and browsers drop a server-reflexive candidate equal to a host one. The
    // TURN/UDP answer carries the same mapped address (the relay candidate's related address).
    // The server's own view of this test's UDP (its TURN Allocates) says which address it sees.
    const hosts = new Set(r.candidates.filter((c) => c.type === 'host').map((c) => c.address));
    const udpFrom = (results.server || []).find((a) => a.transport === 'udp');
    const ip = udpFrom && udpFrom.from.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    if (ip && hosts.has(ip)) {
      return { ok: true, text: `STUN works: the server sees your own address ${ip} (no NAT between you and it, so browsers show no separate STUN candidate)` };
    }
    return { ok: false, text: 'no STUN answer: UDP to the server is blocked on this network (or the server is down)' };
  }
  if (got) return { ok: true, text: `${kind.label} works` };
  const codes = [...new Set(r.errors.map((e) => e.code))];
  const refused = seen.filter((a) => a.code && a.code !== 401 && a.code !== 438);
  if (refused.length) {
    const c = refused[refused.length - 1].code;
    return { ok: false, text: `${kind.label}: the server refused the allocation (${c}: ${MEANING[c] || 'error'})` };
  }
  if (seen.length === 0) {
    return { ok: false, text: `${kind.label} failed: the server never saw an Allocate (blocked on this network${codes.length ? `; browser errors ${codes.join(', ')}` : ''})` };
  }
  return { ok: false, text: `${kind.label} failed${codes.length ? ` (${codes.map((c) => `${c}: ${MEANING[c] || 'error'}`).join('; ')})` : ''}` };
}

async function run() {
  const rows = document.getElementById('rows');
  const overall = document.getElementById('overall');
  rows.textContent = '';
  overall.textContent = 'Testing…';
  overall.dataset.done = '';
  const cfg = await (await fetch('/api/selftest', { cache: 'no-store' })).json();
  const cred = { username: cfg.username, credential: cfg.credential };
  const results = {};
  for (const kind of KINDS) {
    const urls = cfg.transports[kind.key] || [];
    const tr = document.createElement('tr');
    tr.dataset.testid = `selftest-${kind.key}`;
    tr.setAttribute('data-testid', `selftest-${kind.key}`);
    rows.appendChild(tr);
    if (urls.length === 0) {
      results[kind.key] = { ok: false, skipped: true, verdict: `${kind.label}: this server does not offer it`, candidates: [], errors: [], firstMs: {} };
      tr.innerHTML = '';
      for (const t of [kind.label, results[kind.key].verdict, '', '', '', '']) {
        const td = document.createElement('td'); td.textContent = t; tr.appendChild(td);
      }
      continue;
    }
    const r = await gather(urls, kind.key === 'stun' ? null : cred, kind.key !== 'stun');
    results[kind.key] = { ...r, urls };
  }
  // What the server saw from this credential, per transport.
  let seen = [];
  try {
    const rep = await (await fetch(`/api/selftest/report?username=${encodeURIComponent(cfg.username)}`, { cache: 'no-store' })).json();
    seen = rep.allocates || [];
  } catch { /* the server view is extra */ }
  Object.defineProperty(results, 'server', { value: seen, enumerable: false });
  for (const kind of KINDS) {
    const r = results[kind.key];
    if (r.skipped) continue;
    const mine = kind.transport ? seen.filter((a) => a.transport === kind.transport) : [];
    const v = verdict(kind, r, mine, results);
    Object.assign(r, { ok: v.ok, verdict: v.text, server: mine });
    const tr = rows.querySelector(`[data-testid="selftest-${kind.key}"]`);
    const first = kind.want === 'srflx' ? r.firstMs.srflx : r.firstMs.relay;
    const cells = [
      kind.label,
      v.text,
      first === undefined ? '—' : `${kind.want} after ${first} ms`,
      r.candidates.map(candidateLine).join('\n') || 'none',
      r.errors.map((e) => `${e.code} ${MEANING[e.code] || e.text || ''} (${e.url})`).join('\n') || 'none',
      kind.transport ? (mine.length ? mine.map((a) => (a.code ? `Allocate → ${a.code}` : 'Allocate → relay given')).join(', ') : 'no Allocate') : '—',
    ];
    tr.textContent = '';
    for (const t of cells) {
      const td = document.createElement('td');
      td.textContent = t;
      tr.appendChild(td);
    }
    tr.className = v.ok ? 'ok' : 'bad';
  }
  const ok = (k) => results[k] && results[k].ok;
  let line;
  if (ok('turn-udp')) line = 'Calls can relay over UDP, the best case.';
  else if (ok('turn-tcp') || ok('turn-tls')) line = `UDP blocked on this network: calls will use ${ok('turn-tls') ? 'TURN over TLS' : 'TURN over TCP'}.`;
  else line = 'No relay works from this network: calls behind a strict NAT will fail.';
  overall.textContent = line;
  overall.dataset.done = '1';
  last = { results, overall: line, server: seen };
  return last;
}

window.selftest = { results: () => last, run };
document.getElementById('run').addEventListener('click', () => { run(); });
run();
