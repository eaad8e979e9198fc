// natpass call: a multi-party mesh video call over natpass's signaling and STUN/TURN.
// Modules: config.js (rules served by the server), signaling.js (socket, outbox, resume),
// peer.js (one RTCPeerConnection and its negotiation state), ui.js (DOM). This file wires them:
// the landing page, the pre-join screen, the room, the full-room screen, one record per remote
// participant, the stall watchdog and stats.
//
// Screens: landing (no room in the URL, or an invalid one, explained) → pre-join (a link opened:
// name, preview, devices; nothing is sent and no peer connection exists until Join) → room →
// full (the room had no seat: media off, no chat; retry or wait for a seat).
//
// Per remote participant (state.remotes: pid -> Remote):
//   { pid, name, tile, peer: Peer|null, sample: {bytes, time} }
// The tile lives as long as the participant; the Peer is replaced on every new session.

import { loadConfig } from './config.js';
import { Signaling } from './signaling.js';
import { Peer, newSessionId, acceptsReset } from './peer.js';
import { SfuSession } from './sfu.js';
import * as ui from './ui.js';

const { $ } = ui;
const params = new URLSearchParams(location.search);

let config;
try {
  config = await loadConfig();
} catch (e) {
  document.querySelector('#landing .hint').textContent = 'This page cannot reach its server (' + e.message + '); reload to try again.';
  throw e;
}

const state = {
  sig: null,
  me: null,
  room: null,
  name: null,
  iceServers: [],
  // `?relay=1` / `?relay=0` in a link wins; otherwise the last choice made in this browser.
  relayOnly: params.has('relay') ? params.get('relay') === '1' : localStorage.getItem('natpass-relay') === '1',
  localStream: null,
  mediaTried: false, // getUserMedia asked once for this seat (a viewer without devices is asked once)
  statsTimer: null,
  waitTimer: null, // "wait for a free seat": a join attempt every few seconds
  remotes: new Map(),
  chains: new Map(), // pid -> the promise of its last signal, to keep each sender's order
  stats: {},
  restarts: 0, // sessions the watchdog had to start over
  // 'mesh': one RTCPeerConnection per other participant (state.remotes[pid].peer); 'sfu': one
  // to natpass's SFU (state.sfu), whatever the room's size. The server says which (join
  // answer, room-mode); `?mode=` asks for one when this page opens the room.
  mode: 'mesh',
  sfu: null,
  pinned: null, // the tile clicked (in an SFU room the SFU sends it in its high layer)
  sfuRetry: null,
};

// ---------- landing ----------
const validRoom = (r) => r.length <= config.roomMaxLength && config.roomPattern.test(r);

function randomRoom() {
  const b = new Uint8Array(16); // 128 bits
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function displayName(input = $('name')) {
  let n = (input.value || params.get('name') || localStorage.getItem('natpass-name') || '').trim();
  if (!n) n = 'Guest-' + Math.floor(Math.random() * 9000 + 1000);
  n = Array.from(n).slice(0, config.nameMaxLength).join('');
  localStorage.setItem('natpass-name', n);
  return n;
}

// A room link carries the room only: whoever opens it chooses their own name on the pre-join
// screen. The name typed here is remembered for this browser.
function goToRoom(room) {
  displayName();
  const u = new URL(location.origin + '/');
  u.searchParams.set('room', room);
  location.assign(u.toString());
}

function roomLink() {
  const u = new URL(location.origin + '/');
  u.searchParams.set('room', state.room);
  return u.toString();
}

$('room-input').pattern = config.roomPatternSource;
$('room-input').maxLength = config.roomMaxLength;
$('name').maxLength = config.nameMaxLength;
$('chat-input').maxLength = config.chatMaxLength;
$('create').addEventListener('click', () => goToRoom(randomRoom()));
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = $('room-input').value.trim();
  if (validRoom(r)) goToRoom(r);
});
$('name').value = params.get('name') || localStorage.getItem('natpass-name') || '';

// ---------- remote participants ----------
/** A choice made by hand outlives a reload: remembered here, and no `?relay=` left to override it. */
function rememberRelay(on) {
  localStorage.setItem('natpass-relay', on ? '1' : '0');
  const u = new URL(location.href);
  if (u.searchParams.has('relay')) {
    u.searchParams.delete('relay');
    history.replaceState(null, '', u.toString());
  }
}

function pcConfig() {
  return { iceServers: state.iceServers, iceTransportPolicy: state.relayOnly ? 'relay' : 'all' };
}

function people() {
  ui.showPeople([...state.remotes.values()].map((r) => r.name));
}

function remoteFor(pid, name) {
  let r = state.remotes.get(pid);
  if (!r) {
    r = { pid, name, tile: ui.makeTile(pid, name), peer: null, sample: { bytes: 0, time: 0 } };
    r.tile.addEventListener('click', (e) => { if (!e.target.closest('button')) pin(pid); });
    state.remotes.set(pid, r);
    people();
  } else if (name && name !== r.name) {
    r.name = name;
    r.tile.querySelector('.label').textContent = name;
    people();
  }
  return r;
}

function sendSignal(to, data) { state.sig.send({ type: 'signal', to, data }); }

/** Replace `r`'s connection by a new one for `session`. */
function newPeer(r, session, initiator, retries = 0) {
  if (r.peer) r.peer.close();
  r.sample = { bytes: 0, time: 0 };
  r.remoteVideo = undefined;
  // The panel speaks of the new connection from now on: the old one's route is not this one's.
  delete state.stats[r.pid];
  ui.showStats(r.tile, r.pid, { route: 'connecting…', rttMs: null, kbps: 0 });
  r.peer = new Peer({
    pid: r.pid, name: r.name, me: state.me, session, initiator, retries,
    config: pcConfig(), localStream: state.localStream,
    signal: (data) => sendSignal(r.pid, data),
    onTrack: (stream) => ui.showStream(r.tile, stream),
    onChat: (text) => ui.addChat(r.name, text.slice(0, config.chatMaxLength)),
    onMedia: (m) => { r.remoteVideo = m.video; ui.showMedia(r.tile, r.name, m); },
    onOpen: () => sendMediaState(r.peer),
    onBye: () => {
      // The tab closed (or reloads): its tile goes now, not when the server's grace period ends.
      // A reload comes back with a new session, and a new tile.
      if (state.remotes.get(r.pid) === r && r.peer && r.peer.dc) { removeRemote(r.pid); ui.toast(r.name + ' left'); }
    },
  });
  return r.peer;
}

/** Start a new session towards `pid`: the reset goes out before anything of the new connection. */
function startSession(pid, name, retries = 0) {
  const r = remoteFor(pid, name);
  const session = newSessionId();
  sendSignal(pid, { reset: true, session, replaces: r.peer ? r.peer.session : undefined, name: state.name });
  newPeer(r, session, true, retries);
}

function removeRemote(pid) {
  const r = state.remotes.get(pid);
  if (!r) return;
  if (r.peer) r.peer.close();
  r.tile.remove();
  state.remotes.delete(pid);
  delete state.stats[pid];
  people();
  return r;
}

async function onPeerSignal(from, data) {
  if (!data || typeof data !== 'object' || typeof data.session !== 'string') return;
  const r = state.remotes.get(from);
  if (data.reset) {
    if (!acceptsReset(r ? r.peer : null, data)) return;
    newPeer(remoteFor(from, typeof data.name === 'string' ? data.name : 'peer'), data.session, false);
    return;
  }
  if (!r || !r.peer || r.peer.session !== data.session) return; // a session that is gone
  await r.peer.handleSignal(data);
}

// ---------- signaling ----------
let refreshTimer = null;

function onJoined(m, resumed) {
  state.me = m.you;
  const wasSfu = state.mode === 'sfu';
  state.mode = m.mode === 'sfu' ? 'sfu' : 'mesh';
  stopWaiting();
  showRoom();
  if (refreshTimer === null && m.ttl > 0) {
    // Fresh TURN credentials before the old ones expire (new gatherings, ICE restarts).
    refreshTimer = setInterval(() => state.sig.send({ type: 'ice-servers' }), Math.max(60, m.ttl / 2) * 1000);
  }
  state.iceServers = m.iceServers || [];
  sessionStorage.setItem('natpass-resume-' + state.room, m.resume);
  ui.setStatus('in room');
  const present = new Set(m.participants.map((p) => p.id));
  for (const pid of [...state.remotes.keys()]) {
    // A new identity means every old connection is gone on the other side; a resumed one keeps
    // its connections except with those who left meanwhile.
    if (!resumed || !present.has(pid)) removeRemote(pid);
  }
  // Back from the full-room screen the camera was off: turn it on again before any connection
  // is built (the others wait for our reset, so nothing is lost meanwhile).
  if (state.mode === 'sfu') {
    for (const p of m.participants) remoteFor(p.id, p.name);
    ensureMedia().then(() => {
      if (state.me !== m.you || !state.sig) return;
      // A resumed identity keeps its SFU session (the server kept it too).
      if (!(resumed && wasSfu && state.sfu)) startSfu();
    });
    return;
  }
  stopSfu();
  ensureMedia().then(() => {
    if (state.me !== m.you || !state.sig) return; // left or rejoined meanwhile
    for (const p of m.participants) {
      const r = state.remotes.get(p.id);
      if (!r || !r.peer) startSession(p.id, p.name);
      else r.peer.pc.setConfiguration(pcConfig());
    }
  });
}

function onSignalingMessage(m) {
  switch (m.type) {
    case 'participant-joined':
      // The newcomer starts the session; its reset creates our side. In an SFU room the tile
      // comes now, its video when the SFU offers it.
      if (m.participant && typeof m.participant.name === 'string') {
        ui.toast(m.participant.name.slice(0, config.nameMaxLength) + ' joined');
        if (state.mode === 'sfu' && typeof m.participant.id === 'string') remoteFor(m.participant.id, m.participant.name.slice(0, config.nameMaxLength));
      }
      break;
    case 'room-mode':
      // The room grew past the mesh size: every connection of the mesh gives way to one to the
      // SFU (tiles stay; their video comes back through the SFU).
      if (m.mode === 'sfu' && state.mode !== 'sfu') {
        state.mode = 'sfu';
        for (const r of state.remotes.values()) { if (r.peer) r.peer.close(); r.peer = null; }
        ensureMedia().then(() => { if (state.mode === 'sfu' && state.sig) startSfu(); });
      }
      break;
    case 'sfu-offer':
      if (state.sfu && typeof m.sdp === 'string') state.sfu.onOffer(m.sdp).catch(() => restartSfuSoon());
      break;
    case 'sfu-restart':
      if (state.mode === 'sfu') startSfu();
      break;
    case 'speaker':
      for (const r of state.remotes.values()) ui.markTile(r.tile, 'speaking', r.pid === m.id);
      break;
    case 'participant-left': {
      const r = removeRemote(m.id);
      if (r) ui.toast(r.name + ' left');
      break;
    }
    case 'signal': {
      // A reset is applied at once, not queued: it closes the old connection, which releases
      // whatever of that connection the queue was waiting on (an operation a starved browser
      // never finishes must not hold back the new session).
      if (state.mode === 'sfu') break; // a mesh signal from someone who has not moved yet
      if (m.data && m.data.reset) { onPeerSignal(m.from, m.data).catch((e) => console.warn('reset', e)); break; }
      // One at a time per sender, in arrival order: a candidate must not overtake its
      // description, and one participant's slow or dead negotiation must not hold up another's.
      const prev = state.chains.get(m.from) || Promise.resolve();
      const next = prev.then(() => onPeerSignal(m.from, m.data)).catch((e) => console.warn('signal', e));
      state.chains.set(m.from, next);
      next.then(() => { if (state.chains.get(m.from) === next) state.chains.delete(m.from); });
      break;
    }
    case 'chat':
      ui.addChat(m.name || 'someone', String(m.text).slice(0, config.chatMaxLength));
      break;
    case 'ice-servers':
      state.iceServers = m.iceServers || state.iceServers;
      for (const r of state.remotes.values()) if (r.peer) r.peer.pc.setConfiguration(pcConfig());
      break;
    case 'room-closed':
      // Do not come back: a reconnect would open the room again.
      ui.notice('This room was closed by the operator.');
      state.sig.stop();
      stopSfu();
      for (const pid of [...state.remotes.keys()]) removeRemote(pid);
      break;
    case 'error':
      if (m.reason === 'room full') roomFull();
      else console.warn('signaling error', m.reason);
      break;
    default:
      break;
  }
}

const statusText = { closed: 'reconnecting…', connecting: 'connecting…', joining: 'joining…', ready: 'in room', stopped: 'left' };

function connect() {
  if (state.sig) state.sig.stop();
  state.sig = new Signaling({
    url: location.origin,
    // ?transport=polling: long-polling only, as behind a proxy that blocks WebSockets.
    transports: params.get('transport') === 'polling' ? ['polling'] : ['polling', 'websocket'],
    pacing: config.pacing,
    maxMessage: config.maxMessage,
    joinRequest: () => ({
      type: 'join', room: state.room, name: state.name,
      mode: ['mesh', 'sfu'].includes(params.get('mode')) ? params.get('mode') : undefined,
      resume: sessionStorage.getItem('natpass-resume-' + state.room) || undefined,
    }),
    onJoined,
    onMessage: onSignalingMessage,
    onState: (s) => ui.setStatus(statusText[s] || s),
  });
  state.sig.start();
}

// ---------- the SFU session ----------
/** Click a tile: pin it (again: unpin). In an SFU room the SFU then sends it in full size. */
function pin(pid) {
  state.pinned = state.pinned === pid ? null : pid;
  for (const r of state.remotes.values()) ui.markTile(r.tile, 'pinned', r.pid === state.pinned);
  if (state.mode === 'sfu' && state.sig) state.sig.send({ type: 'sfu-pin', id: state.pinned || '' });
}

function startSfu() {
  stopSfu();
  const s = new SfuSession({
    config: pcConfig(),
    localStream: state.localStream,
    request: (type, body) => state.sig.request(type, body),
    onStream: (pid, stream) => {
      if (pid === state.me) return;
      const known = state.remotes.get(pid);
      ui.showStream(remoteFor(pid, known ? known.name : 'peer').tile, stream);
    },
    onFailed: () => restartSfuSoon(),
    onChat: (from, text) => {
      const r = state.remotes.get(from);
      ui.addChat(r ? r.name : 'someone', text.slice(0, config.chatMaxLength));
    },
  });
  state.sfu = s;
  if (state.pinned) state.sig.send({ type: 'sfu-pin', id: state.pinned });
  s.start().catch((e) => { if (state.sfu === s) { console.warn('sfu join', e); restartSfuSoon(); } });
}

/** The SFU session failed or was refused: a fresh one in 2 s (one pending restart at most). */
function restartSfuSoon() {
  if (state.sfuRetry !== null || state.mode !== 'sfu') return;
  state.restarts += 1;
  state.sfuRetry = setTimeout(() => {
    state.sfuRetry = null;
    if (state.mode === 'sfu' && state.sig && state.me) startSfu();
  }, 2000);
}

function stopSfu() {
  if (state.sfu) state.sfu.close();
  state.sfu = null;
  if (state.sfuRetry !== null) clearTimeout(state.sfuRetry);
  state.sfuRetry = null;
}

/** Per participant: what arrives from the SFU for it (its video receivers' stats). */
async function updateSfuStats() {
  const s = state.sfu;
  let report;
  try { report = await s.pc.getStats(); } catch { return; }
  const { stats: link } = ui.summarize(report, { bytes: 0, time: 0 });
  for (const r of [...state.remotes.values()]) {
    let framesDecoded = 0, bytes = 0, frameWidth = 0;
    for (const rcv of s.receiversOf(r.pid)) {
      if (!rcv.track || rcv.track.kind !== 'video') continue;
      let rep;
      try { rep = await rcv.getStats(); } catch { continue; }
      rep.forEach((x) => {
        if (x.type !== 'inbound-rtp') return;
        framesDecoded += x.framesDecoded || 0;
        bytes += x.bytesReceived || 0;
        frameWidth = Math.max(frameWidth, x.frameWidth || 0);
      });
    }
    if (state.sfu !== s || state.remotes.get(r.pid) !== r) continue;
    const now = performance.now();
    const kbps = r.sample.time ? ((bytes - r.sample.bytes) * 8) / (now - r.sample.time) : 0;
    r.sample = { bytes, time: now };
    const route = link.localType ? `${link.route} to the SFU` : link.route;
    const stats = { ...link, route, kbps: Math.round(kbps), framesDecoded, frameWidth, via: 'sfu' };
    state.stats[r.pid] = { connectionState: s.pc.connectionState, ...stats };
    ui.showStats(r.tile, r.pid, stats);
  }
}

// ---------- watchdog and stats ----------
// A session that never got off the ground (still "new" with nothing moving for 8 s on the side
// that started it, 12 s on the other, twice as long after each restart) is started over; one
// that connected but whose video never arrived although the other side sends it, by the side
// that waits for it (a few times at most). A session that cannot start is tried again every
// minute or so for as long as both are in the room (Peer#stalled, Peer#silent).
function watchdog() {
  for (const r of [...state.remotes.values()]) {
    if (!r.peer) continue;
    const stalled = r.peer.stalled();
    if (stalled || r.peer.silent(r.remoteVideo, r.sample.bytes)) {
      console.warn(stalled ? 'negotiation stalled' : 'no video arrived', '- starting over with', r.pid);
      state.restarts += 1;
      startSession(r.pid, r.name, r.peer.retries + 1);
    }
  }
}

async function updateStats() {
  if (state.mode === 'sfu') { if (state.sfu) await updateSfuStats(); return; }
  watchdog();
  for (const r of [...state.remotes.values()]) {
    if (!r.peer) continue;
    let report;
    try { report = await r.peer.pc.getStats(); } catch { continue; }
    if (state.remotes.get(r.pid) !== r) continue;
    const { sample, stats } = ui.summarize(report, r.sample);
    r.sample = sample;
    state.stats[r.pid] = { connectionState: r.peer.pc.connectionState, ...stats };
    ui.showStats(r.tile, r.pid, stats);
  }
}

// For automation and debugging: a read-only view of the call, and a way to drop the socket.
window.natpass = {
  me: () => state.me,
  peers: () => [...state.remotes.keys()],
  stats: () => JSON.parse(JSON.stringify(state.stats)),
  localTracks: () => (state.localStream ? state.localStream.getTracks().filter((t) => t.readyState === 'live').length : 0),
  screen: () => ['landing', 'prejoin', 'room', 'full'].find((id) => !$(id).hidden) || null,
  relayOnly: () => state.relayOnly,
  mode: () => state.mode,
  pinned: () => state.pinned,
  // RTCPeerConnections this page holds now (an SFU room: one, whatever its size).
  peerConnections: () => (state.sfu ? 1 : 0) + [...state.remotes.values()].filter((r) => r.peer).length,
  // What this page sends of its video: one entry per outbound encoding (rid, frame width).
  outboundVideo: async () => {
    const pcs = state.sfu ? [state.sfu.pc] : [...state.remotes.values()].filter((r) => r.peer).map((r) => r.peer.pc);
    const out = [];
    for (const pc of pcs) {
      (await pc.getStats()).forEach((x) => { if (x.type === 'outbound-rtp' && x.kind === 'video') out.push({ rid: x.rid || null, frameWidth: x.frameWidth || 0, bytesSent: x.bytesSent || 0, limited: x.qualityLimitationReason || null, pli: x.pliCount || 0, keyframes: x.keyFramesEncoded || 0 }); });
    }
    return out;
  },
  restarts: () => state.restarts,
  signaling: () => ({ state: state.sig ? state.sig.state : null, pending: state.sig ? state.sig.pending() : 0, transport: state.sig ? state.sig.transport() : null }),
  dropSignaling: () => state.sig && state.sig.drop(),
  debug: () => Object.fromEntries([...state.remotes].map(([pid, r]) => [pid, r.peer ? r.peer.describe() : null])),
  config: () => ({ ...config, roomPattern: config.roomPatternSource }),
};

// ---------- media and controls ----------
async function startMedia(constraints) {
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (e) {
    ui.notice('No camera or microphone (' + e.name + '): you can still watch and listen.');
    return null;
  }
}

async function fillDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devs = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, sel] of [['audioinput', $('mic-select')], ['videoinput', $('camera-select')]]) {
    sel.replaceChildren();
    for (const d of devs.filter((x) => x.kind === kind)) {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || kind;
      sel.appendChild(o);
    }
  }
}

async function switchDevice(kind, deviceId) {
  const s = await startMedia(kind === 'audio' ? { audio: { deviceId: { exact: deviceId } } } : { video: { deviceId: { exact: deviceId } } });
  if (!s || !state.localStream) return;
  const track = s.getTracks()[0];
  const old = state.localStream.getTracks().find((t) => t.kind === track.kind);
  if (old) { state.localStream.removeTrack(old); old.stop(); }
  state.localStream.addTrack(track);
  for (const r of state.remotes.values()) {
    if (!r.peer) continue;
    const sender = r.peer.pc.getSenders().find((x) => x.track && x.track.kind === track.kind);
    if (sender) await sender.replaceTrack(track);
  }
}

$('mic-select').addEventListener('change', (e) => switchDevice('audio', e.target.value));
$('camera-select').addEventListener('change', (e) => switchDevice('video', e.target.value));

/** Tell the others (over the data channels) whether our microphone and camera are on. */
function mediaState() {
  const on = (ts) => ts.length > 0 && ts.some((t) => t.enabled);
  const s = state.localStream;
  return { audio: !!s && on(s.getAudioTracks()), video: !!s && on(s.getVideoTracks()) };
}
function sendMediaState(peer) {
  if (peer && peer.chatOpen()) { try { peer.dc.send(JSON.stringify({ media: mediaState() })); } catch { /* closing */ } }
}

function toggle(kind, button, onLabel, offLabel) {
  if (!state.localStream) return;
  const tracks = kind === 'audio' ? state.localStream.getAudioTracks() : state.localStream.getVideoTracks();
  const enabled = !(tracks[0] && tracks[0].enabled);
  for (const t of tracks) t.enabled = enabled;
  button.setAttribute('aria-pressed', String(!enabled));
  button.textContent = enabled ? onLabel : offLabel;
  for (const r of state.remotes.values()) sendMediaState(r.peer);
}
$('toggle-mic').addEventListener('click', (e) => toggle('audio', e.currentTarget, 'Mute', 'Unmute'));
$('toggle-camera').addEventListener('click', (e) => toggle('video', e.currentTarget, 'Camera off', 'Camera on'));

// A new ICE policy needs new candidates on both sides: start every connection over (an ICE
// restart alone kept Chromium on its host pair).
$('relay-only').addEventListener('change', (e) => {
  state.relayOnly = e.target.checked;
  rememberRelay(state.relayOnly);
  if (state.mode === 'sfu') { if (state.sfu) startSfu(); return; }
  for (const r of [...state.remotes.values()]) startSession(r.pid, r.name);
});

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = Array.from($('chat-input').value.trim()).slice(0, config.chatMaxLength).join('');
  if (!text) return;
  $('chat-input').value = '';
  ui.addChat('You', text);
  // An SFU room: over the data channel to the SFU, which passes it to everyone.
  if (state.mode === 'sfu') { if (!(state.sfu && state.sfu.sendChat(text))) state.sig.send({ type: 'chat', text }); return; }
  const peers = [...state.remotes.values()].map((r) => r.peer).filter(Boolean);
  if (peers.length > 0 && peers.every((p) => p.chatOpen())) for (const p of peers) p.dc.send(JSON.stringify({ text }));
  else state.sig.send({ type: 'chat', text }); // signaling fallback
});

$('copy-link').addEventListener('click', async () => {
  const link = roomLink();
  try { await navigator.clipboard.writeText(link); $('copy-link').textContent = 'Copied'; } catch { prompt('Room link', link); }
});

// A closing tab says goodbye to everyone it has a data channel with.
window.addEventListener('pagehide', () => {
  for (const r of state.remotes.values()) if (r.peer && r.peer.chatOpen()) { try { r.peer.dc.send(JSON.stringify({ bye: true })); } catch { /* closing */ } }
});

$('alone-copy').addEventListener('click', async () => {
  const link = roomLink();
  try { await navigator.clipboard.writeText(link); $('alone-copy').textContent = 'Copied'; } catch { prompt('Room link', link); }
});

$('leave').addEventListener('click', () => {
  if (state.sig) state.sig.stop({ type: 'leave' });
  stopSfu();
  for (const pid of [...state.remotes.keys()]) removeRemote(pid);
  if (state.localStream) for (const t of state.localStream.getTracks()) t.stop();
  sessionStorage.removeItem('natpass-resume-' + state.room);
  setTimeout(() => location.assign('/'), 100);
});

// ---------- pre-join, room and full-room screens ----------
const mediaConstraints = (mic, cam) => ({
  audio: mic ? { deviceId: { exact: mic } } : true,
  video: cam ? { deviceId: { exact: cam }, width: 640, height: 360 } : { width: 640, height: 360 },
});

function stopMedia() {
  if (state.localStream) for (const t of state.localStream.getTracks()) t.stop();
  state.localStream = null;
  $('local-video').srcObject = null;
  $('preview-video').srcObject = null;
}

async function fillPrejoinDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devs = await navigator.mediaDevices.enumerateDevices();
  const current = (kind) => {
    const t = state.localStream && state.localStream.getTracks().find((x) => x.kind === kind);
    return t && t.getSettings ? t.getSettings().deviceId : undefined;
  };
  for (const [kind, sel, track] of [['audioinput', $('prejoin-mic'), 'audio'], ['videoinput', $('prejoin-camera'), 'video']]) {
    sel.replaceChildren();
    for (const d of devs.filter((x) => x.kind === kind)) {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || kind;
      sel.appendChild(o);
    }
    const id = current(track);
    if (id) sel.value = id;
  }
}

async function preview() {
  stopMedia();
  $('preview-state').textContent = 'Camera starting…';
  state.localStream = await startMedia(mediaConstraints($('prejoin-mic').value, $('prejoin-camera').value));
  state.mediaTried = true;
  if (state.localStream) {
    $('preview-video').srcObject = state.localStream;
    $('preview-state').textContent = 'Preview';
  } else {
    $('preview-state').textContent = 'No camera: you can still watch and listen';
  }
  await fillPrejoinDevices();
}

function show(screen) {
  for (const id of ['landing', 'prejoin', 'room', 'full']) $(id).hidden = id !== screen;
}

function showPrejoin(room) {
  state.room = room;
  show('prejoin');
  $('prejoin-room').textContent = 'Room ' + room;
  $('prejoin-name').maxLength = config.nameMaxLength;
  $('prejoin-name').value = params.get('name') || localStorage.getItem('natpass-name') || '';
  $('prejoin-relay').checked = state.relayOnly;
  $('prejoin-join').disabled = false;
  preview();
}

$('prejoin-mic').addEventListener('change', preview);
$('prejoin-relay').addEventListener('change', (e) => rememberRelay(e.target.checked));
$('prejoin-camera').addEventListener('change', preview);
$('prejoin-join').addEventListener('click', () => {
  $('prejoin-join').disabled = true;
  state.name = displayName($('prejoin-name'));
  state.relayOnly = $('prejoin-relay').checked;
  showRoom();
  connect();
});

/** The call screen (idempotent): local video, devices, the stats loop. */
function showRoom() {
  if (!$('room').hidden) return;
  show('room');
  ui.notice('');
  $('room-name').textContent = 'Room ' + state.room;
  $('alone-link').textContent = roomLink();
  people();
  $('relay-only').checked = state.relayOnly;
  $('local-video').srcObject = state.localStream;
  $('preview-video').srcObject = null;
  fillDevices();
  if (state.statsTimer === null) state.statsTimer = setInterval(updateStats, 1000);
}

/** Media for the call, unless this seat already asked once (a viewer without devices). */
async function ensureMedia() {
  if (state.localStream || state.mediaTried) return;
  state.mediaTried = true;
  state.localStream = await startMedia(mediaConstraints('', ''));
  $('local-video').srcObject = state.localStream;
  await fillDevices();
}

// No seat: nothing of the call stays on (no camera, no chat, no connection); the visitor may
// retry at once or let the page retry until a seat is free.
function roomFull() {
  if (state.sig) state.sig.stop();
  state.sig = null;
  state.me = null;
  stopSfu();
  for (const pid of [...state.remotes.keys()]) removeRemote(pid);
  stopMedia();
  state.mediaTried = false;
  $('chat-log').replaceChildren();
  show('full');
  $('full-status').textContent = state.waitTimer !== null
    ? 'Waiting for a free seat: the page tries again every 5 seconds (last try ' + new Date().toLocaleTimeString() + ').'
    : '';
}

function stopWaiting() {
  if (state.waitTimer !== null) clearInterval(state.waitTimer);
  state.waitTimer = null;
  $('full-wait').setAttribute('aria-pressed', 'false');
  $('full-wait').textContent = 'Wait for a free seat';
}

$('full-retry').addEventListener('click', () => {
  $('full-status').textContent = 'Trying again…';
  connect();
});
$('full-wait').addEventListener('click', () => {
  if (state.waitTimer !== null) { stopWaiting(); $('full-status').textContent = ''; return; }
  state.waitTimer = setInterval(() => { if (!state.sig) connect(); }, 5000);
  $('full-wait').setAttribute('aria-pressed', 'true');
  $('full-wait').textContent = 'Stop waiting';
  $('full-status').textContent = 'Waiting for a free seat: the page tries again every 5 seconds.';
  connect();
});

const initialRoom = params.get('room');
if (initialRoom !== null && validRoom(initialRoom)) {
  if (sessionStorage.getItem('natpass-resume-' + initialRoom)) {
    // This tab was in the call (a reload): take the seat back at once, as before the reload.
    state.room = initialRoom;
    state.name = displayName($('prejoin-name'));
    ensureMedia().then(() => { showRoom(); connect(); });
  } else {
    showPrejoin(initialRoom);
  }
}
else if (initialRoom !== null) {
  ui.notice('');
  const why = document.createElement('p');
  why.className = 'notice';
  why.dataset.testid = 'invalid-room';
  why.textContent = `"${Array.from(initialRoom).slice(0, 80).join('')}" is not a valid room name: a room name has 1 to ${config.roomMaxLength} letters, digits, "-" or "_". Check the link, or create a new room.`;
  $('landing').prepend(why);
}
