// The page's DOM: status line, notices, tiles, chat log, and the route shown per peer.
// Everything a remote participant controls (names, chat) is rendered with textContent.

export const $ = (id) => document.getElementById(id);

export function setStatus(t) { $('status').textContent = t; }

export function notice(t) {
  const n = $('notice');
  n.textContent = t;
  n.hidden = !t;
}

export function makeTile(pid, name) {
  const t = document.createElement('div');
  t.className = 'tile';
  t.dataset.testid = 'tile-' + pid;
  t.dataset.peer = pid;
  const v = document.createElement('video');
  v.autoplay = true;
  v.playsInline = true;
  v.setAttribute('playsinline', '');
  const label = document.createElement('span');
  label.className = 'label';
  label.textContent = name;
  const panel = document.createElement('div');
  panel.className = 'panel';
  for (const k of ['route', 'rtt', 'bitrate']) {
    const s = document.createElement('span');
    s.dataset.testid = `${k}-${pid}`;
    s.className = k;
    s.textContent = k === 'route' ? 'connecting…' : '';
    panel.appendChild(s);
  }
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.dataset.testid = 'avatar-' + pid;
  avatar.hidden = true;
  const muted = document.createElement('span');
  muted.className = 'muted';
  muted.dataset.testid = 'muted-' + pid;
  muted.textContent = 'muted';
  muted.hidden = true;
  t.append(v, avatar, label, muted, panel);
  $('tiles').appendChild(t);
  return t;
}

export function showStream(tile, stream) {
  const v = tile.querySelector('video');
  if (v.srcObject === stream) return;
  v.srcObject = stream;
  play(tile, v);
}

// Browsers block unmuted autoplay until the person has interacted with the page (a viewer with
// no camera or microphone, or a reload, has not). Then the tile offers a button: one click plays
// every blocked tile.
function play(tile, v) {
  v.play().then(() => { tile.querySelector('.play')?.remove(); }).catch((e) => {
    if (e.name !== 'NotAllowedError' || tile.querySelector('.play')) return;
    const b = document.createElement('button');
    b.className = 'play';
    b.dataset.testid = 'play-' + tile.dataset.peer;
    b.textContent = 'Click to play and unmute';
    b.addEventListener('click', () => {
      for (const t of document.querySelectorAll('#tiles .tile')) {
        const tv = t.querySelector('video');
        if (tv && tv.srcObject && tv.paused) tv.play().then(() => t.querySelector('.play')?.remove()).catch(() => {});
        else t.querySelector('.play')?.remove();
      }
    });
    tile.appendChild(b);
  });
}

export function addChat(who, text) {
  const li = document.createElement('li');
  const w = document.createElement('span');
  w.className = 'who';
  w.textContent = who;
  const t = document.createElement('span');
  t.textContent = text;
  li.append(w, t);
  $('chat-log').appendChild(li);
  li.scrollIntoView({ block: 'nearest' });
}

/** Route, RTT, bitrate and frame count of one peer from its getStats() report. */
export function summarize(report, prev) {
  const byId = new Map();
  report.forEach((r) => byId.set(r.id, r));
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
  });
  if (!pair) report.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
  let framesDecoded = 0, bytes = 0;
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') { framesDecoded += r.framesDecoded || 0; bytes += r.bytesReceived || 0; }
  });
  const now = performance.now();
  const kbps = prev.time ? ((bytes - prev.bytes) * 8) / (now - prev.time) : 0;
  const local = pair && byId.get(pair.localCandidateId);
  const remote = pair && byId.get(pair.remoteCandidateId);
  let route = 'connecting…';
  if (local) {
    if (local.candidateType === 'relay' || (remote && remote.candidateType === 'relay')) {
      route = `relay (${local.relayProtocol || remote.protocol || 'udp'})`;
    } else if (local.protocol === 'tcp') {
      // ICE over TCP (a network that blocks UDP, to the SFU's TCP candidate); the browser's
      // side of such a connection shows as peer-reflexive, which here says nothing of STUN.
      route = 'direct (tcp)';
    } else if (local.candidateType === 'srflx' || local.candidateType === 'prflx') route = 'direct via STUN';
    else route = 'direct';
  }
  const rttMs = pair && pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null;
  return {
    sample: { bytes, time: now },
    stats: {
      localType: local ? local.candidateType : null,
      remoteType: remote ? remote.candidateType : null,
      relayProtocol: local ? local.relayProtocol || null : null,
      protocol: local ? local.protocol || null : null,
      rttMs, kbps: Math.round(kbps), framesDecoded, route,
    },
  };
}

/** A tile's marker: `pinned` (clicked), `speaking` (the SFU's active speaker). */
export function markTile(tile, what, on) {
  tile.classList.toggle(what, on);
  tile.dataset[what] = on ? 'true' : 'false';
}

export function showStats(tile, pid, s) {
  const el = (k) => tile.querySelector(`[data-testid="${k}-${pid}"]`);
  el('route').textContent = s.route;
  el('route').className = 'route ' + (s.route.startsWith('relay') ? 'route-relay' : s.route.startsWith('direct') ? 'route-direct' : '');
  el('rtt').textContent = s.rttMs === null ? '' : `${s.rttMs} ms`;
  // Through the SFU: which of the sender's layers arrives (its width).
  el('bitrate').textContent = `${s.kbps} kbit/s` + (s.frameWidth ? ` · ${s.frameWidth}px` : '');
}

let toastTimer = null;
/** A short notice ("Ben joined") that goes away by itself; also kept in the chat log. */
export function toast(t) {
  const n = $('toast');
  n.textContent = t;
  n.hidden = false;
  if (toastTimer) clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { n.hidden = true; }, 4000);
  const li = document.createElement('li');
  li.className = 'event';
  li.textContent = t;
  $('chat-log').appendChild(li);
}

/** Tile count on the grid (the CSS picks columns from it) and the participant list. */
export function showPeople(names) {
  const tiles = $('tiles');
  tiles.dataset.count = String(tiles.querySelectorAll('.tile').length);
  $('people-count').textContent = `People (${names.length + 1})`;
  const list = $('people-list');
  list.replaceChildren();
  for (const n of ['You', ...names]) {
    const li = document.createElement('li');
    li.textContent = n;
    list.appendChild(li);
  }
  $('alone').hidden = names.length > 0;
}

/** Camera off: the initials instead of a black picture; microphone off: a "muted" badge. */
export function showMedia(tile, name, m) {
  const avatar = tile.querySelector('.avatar');
  avatar.textContent = initials(name);
  avatar.hidden = m.video;
  tile.querySelector('.muted').hidden = m.audio;
}

export function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  return words.slice(0, 2).map((w) => Array.from(w)[0].toUpperCase()).join('') || '?';
}
