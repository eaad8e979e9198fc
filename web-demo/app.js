// natpass call: a multi-party mesh video call over natpass's signaling and STUN/TURN.
// Modules: config.js (rules served by the server), signaling.js (socket, outbox, resume),
// peer.js (one RTCPeerConnection and its negotiation state), ui.js (DOM). This file wires them:
// the landing page, the room, one record per remote participant, the stall watchdog and stats.
//
// Per remote participant (state.remotes: pid -> Remote):
//   { pid, name, tile, peer: Peer|null, sample: {bytes, time} }
// The tile lives as long as the participant; the Peer is replaced on every new session.

import { loadConfig } from './config.js';
import { Signaling } from './signaling.js';
import { Peer, newSessionId } from './peer.js';
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
  relayOnly: params.get('relay') === '1',
  localStream: null,
  remotes: new Map(),
  chains: new Map(), // pid -> the promise of its last signal, to keep each sender's order
  stats: {},
  restarts: 0, // sessions the watchdog had to start over
};

// ---------- landing ----------
const validRoom = (r) => r.length <= config.roomMaxLength && config.roomPattern.test(r);

function randomRoom() {
  const b = new Uint8Array(16); // 128 bits
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function displayName() {
  let n = ($('name').value || params.get('name') || localStorage.getItem('natpass-name') || '').trim();
  if (!n) n = 'Guest-' + Math.floor(Math.random() * 9000 + 1000);
  n = Array.from(n).slice(0, config.nameMaxLength).join('');
  localStorage.setItem('natpass-name', n);
  return n;
}

function goToRoom(room) {
  const u = new URL(location.href);
  u.searchParams.set('room', room);
  u.searchParams.set('name', displayName());
  location.assign(u.toString());
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
function pcConfig() {
  return { iceServers: state.iceServers, iceTransportPolicy: state.relayOnly ? 'relay' : 'all' };
}

function remoteFor(pid, name) {
  let r = state.remotes.get(pid);
  if (!r) {
    r = { pid, name, tile: ui.makeTile(pid, name), peer: null, sample: { bytes: 0, time: 0 } };
    state.remotes.set(pid, r);
  } else if (name && name !== r.name) {
    r.name = name;
    r.tile.querySelector('.label').textContent = name;
  }
  return r;
}

function sendSignal(to, data) { state.sig.send({ type: 'signal', to, data }); }

/** Replace `r`'s connection by a new one for `session`. */
function newPeer(r, session, initiator, retries = 0) {
  if (r.peer) r.peer.close();
  r.sample = { bytes: 0, time: 0 };
  r.peer = new Peer({
    pid: r.pid, name: r.name, me: state.me, session, initiator, retries,
    config: pcConfig(), localStream: state.localStream,
    signal: (data) => sendSignal(r.pid, data),
    onTrack: (stream) => ui.showStream(r.tile, stream),
    onChat: (text) => ui.addChat(r.name, text.slice(0, config.chatMaxLength)),
  });
  return r.peer;
}

/** Start a new session towards `pid`: the reset goes out before anything of the new connection. */
function startSession(pid, name, retries = 0) {
  const r = remoteFor(pid, name);
  const session = newSessionId();
  sendSignal(pid, { reset: true, session, name: state.name });
  newPeer(r, session, true, retries);
}

function removeRemote(pid) {
  const r = state.remotes.get(pid);
  if (!r) return;
  if (r.peer) r.peer.close();
  r.tile.remove();
  state.remotes.delete(pid);
  delete state.stats[pid];
}

async function onPeerSignal(from, data) {
  if (!data || typeof data !== 'object' || typeof data.session !== 'string') return;
  const r = state.remotes.get(from);
  if (data.reset) {
    if (r && r.peer) {
      if (r.peer.session === data.session) return; // a duplicate
      // Both sides started a session at once: the polite side yields, the other keeps its own.
      if (r.peer.starting() && !r.peer.polite) return;
    }
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
  for (const p of m.participants) {
    const r = state.remotes.get(p.id);
    if (!r || !r.peer) startSession(p.id, p.name);
    else r.peer.pc.setConfiguration(pcConfig());
  }
}

function onSignalingMessage(m) {
  switch (m.type) {
    case 'participant-joined':
      // The newcomer starts the session; its reset creates our side.
      break;
    case 'participant-left':
      removeRemote(m.id);
      break;
    case 'signal': {
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
      for (const pid of [...state.remotes.keys()]) removeRemote(pid);
      break;
    case 'error':
      if (m.reason === 'room full') ui.notice('This room is full.');
      else console.warn('signaling error', m.reason);
      break;
    default:
      break;
  }
}

const statusText = { closed: 'reconnecting…', connecting: 'connecting…', joining: 'joining…', ready: 'in room', stopped: 'left' };

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  state.sig = new Signaling({
    url: `${proto}//${location.host}/ws`,
    pacing: config.pacing,
    maxMessage: config.maxMessage,
    joinRequest: () => ({
      type: 'join', room: state.room, name: state.name,
      resume: sessionStorage.getItem('natpass-resume-' + state.room) || undefined,
    }),
    onJoined,
    onMessage: onSignalingMessage,
    onState: (s) => ui.setStatus(statusText[s] || s),
  });
  state.sig.start();
}

// ---------- watchdog and stats ----------
// A session that never got off the ground (still "new" after 8 s) is started over by the side
// that initiated it, a few times at most.
function watchdog() {
  for (const r of [...state.remotes.values()]) {
    if (r.peer && r.peer.stalled()) {
      console.warn('negotiation stalled, starting over with', r.pid);
      state.restarts += 1;
      startSession(r.pid, r.name, r.peer.retries + 1);
    }
  }
}

async function updateStats() {
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
  relayOnly: () => state.relayOnly,
  restarts: () => state.restarts,
  signaling: () => ({ state: state.sig ? state.sig.state : null, pending: state.sig ? state.sig.pending() : 0 }),
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

function toggle(kind, button, onLabel, offLabel) {
  if (!state.localStream) return;
  const tracks = kind === 'audio' ? state.localStream.getAudioTracks() : state.localStream.getVideoTracks();
  const enabled = !(tracks[0] && tracks[0].enabled);
  for (const t of tracks) t.enabled = enabled;
  button.setAttribute('aria-pressed', String(!enabled));
  button.textContent = enabled ? onLabel : offLabel;
}
$('toggle-mic').addEventListener('click', (e) => toggle('audio', e.currentTarget, 'Mute', 'Unmute'));
$('toggle-camera').addEventListener('click', (e) => toggle('video', e.currentTarget, 'Camera off', 'Camera on'));

// A new ICE policy needs new candidates on both sides: start every connection over (an ICE
// restart alone kept Chromium on its host pair).
$('relay-only').addEventListener('change', (e) => {
  state.relayOnly = e.target.checked;
  for (const r of [...state.remotes.values()]) startSession(r.pid, r.name);
});

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = Array.from($('chat-input').value.trim()).slice(0, config.chatMaxLength).join('');
  if (!text) return;
  $('chat-input').value = '';
  ui.addChat('You', text);
  const peers = [...state.remotes.values()].map((r) => r.peer).filter(Boolean);
  if (peers.length > 0 && peers.every((p) => p.chatOpen())) for (const p of peers) p.dc.send(JSON.stringify({ text }));
  else state.sig.send({ type: 'chat', text }); // signaling fallback
});

$('copy-link').addEventListener('click', async () => {
  const u = new URL(location.href);
  u.searchParams.delete('name');
  try { await navigator.clipboard.writeText(u.toString()); $('copy-link').textContent = 'Copied'; } catch { prompt('Room link', u.toString()); }
});

$('leave').addEventListener('click', () => {
  if (state.sig) state.sig.stop({ type: 'leave' });
  for (const pid of [...state.remotes.keys()]) removeRemote(pid);
  if (state.localStream) for (const t of state.localStream.getTracks()) t.stop();
  sessionStorage.removeItem('natpass-resume-' + state.room);
  setTimeout(() => location.assign('/'), 100);
});

async function enterRoom(room) {
  state.room = room;
  state.name = displayName();
  $('landing').hidden = true;
  $('room').hidden = false;
  $('room-name').textContent = 'Room ' + room;
  $('relay-only').checked = state.relayOnly;
  state.localStream = await startMedia({ audio: true, video: { width: 640, height: 360 } });
  if (state.localStream) $('local-video').srcObject = state.localStream;
  await fillDevices();
  connect();
  setInterval(updateStats, 1000);
}

const initialRoom = params.get('room');
if (initialRoom && validRoom(initialRoom)) enterRoom(initialRoom);
