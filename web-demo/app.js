// natpass call: a multi-party mesh video call over natpass's signaling and STUN/TURN.
// Perfect negotiation (glare-proof), ICE restart on failure, a relay-only switch, chat over an
// RTCDataChannel with signaling as fallback, per-peer route/RTT/bitrate from getStats, and a
// signaling socket that reconnects with backoff and resumes its identity.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  ws: null,
  me: null,
  room: null,
  name: null,
  iceServers: [],
  relayOnly: params.get('relay') === '1',
  localStream: null,
  peers: new Map(), // pid -> peer
  reqId: 0,
  backoff: 500,
  leaving: false,
  signalChain: Promise.resolve(),
  stats: {},
};

// ---------- landing ----------
function randomRoom() {
  const b = new Uint8Array(16); // 128 bits
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function displayName() {
  let n = ($('name').value || params.get('name') || localStorage.getItem('natpass-name') || '').trim();
  if (!n) n = 'Guest-' + Math.floor(Math.random() * 9000 + 1000);
  localStorage.setItem('natpass-name', n);
  return n.slice(0, 40);
}

function goToRoom(room) {
  const u = new URL(location.href);
  u.searchParams.set('room', room);
  const n = displayName();
  u.searchParams.set('name', n);
  location.assign(u.toString());
}

$('create').addEventListener('click', () => goToRoom(randomRoom()));
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = $('room-input').value.trim();
  if (/^[A-Za-z0-9_-]{1,64}$/.test(r)) goToRoom(r);
});
$('name').value = params.get('name') || localStorage.getItem('natpass-name') || '';

// ---------- signaling ----------
// Outgoing messages are paced under the server's per-connection limit (20/s, bursts of 100)
// so a burst of signals (a reload with several peers) is delayed, never dropped.
const outbox = { queue: [], tokens: 60, last: performance.now(), timer: null };

function pump() {
  const now = performance.now();
  outbox.tokens = Math.min(60, outbox.tokens + ((now - outbox.last) / 1000) * 15);
  outbox.last = now;
  while (outbox.queue.length && outbox.tokens >= 1 && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(outbox.queue.shift());
    outbox.tokens -= 1;
  }
  outbox.timer = outbox.queue.length ? setTimeout(pump, 70) : null;
}

function send(obj) {
  obj.id = ++state.reqId;
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  outbox.queue.push(JSON.stringify(obj));
  if (!outbox.timer) pump();
}

function setStatus(t) { $('status').textContent = t; }

function notice(t) {
  const n = $('notice');
  n.textContent = t;
  n.hidden = !t;
}

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/ws`);
  state.ws = ws;
  setStatus('connecting…');
  ws.onopen = () => {
    state.backoff = 500;
    setStatus('connected');
    const resume = sessionStorage.getItem('natpass-resume-' + state.room) || undefined;
    send({ type: 'join', room: state.room, name: state.name, resume });
  };
  ws.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    onSignalingMessage(m);
  };
  ws.onclose = () => {
    if (state.leaving) return;
    setStatus('reconnecting…');
    const wait = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setTimeout(connect, wait + Math.random() * 250);
  };
}

function onSignalingMessage(m) {
  switch (m.type) {
    case 'joined': {
      const fresh = state.me === null;
      state.me = m.you;
      state.iceServers = m.iceServers || [];
      sessionStorage.setItem('natpass-resume-' + state.room, m.resume);
      setStatus('in room');
      // We initiate towards everyone already there that we have no connection with.
      for (const p of m.participants) {
        if (!state.peers.has(p.id)) {
          const peer = createPeer(p.id, p.name, true);
          sendSignal(p.id, { reset: true, name: state.name });
          void peer;
        }
      }
      if (!fresh) for (const [pid, peer] of state.peers) peer.pc.setConfiguration(pcConfig());
      break;
    }
    case 'participant-joined':
      // The newcomer initiates; we create our side when its first signal arrives.
      break;
    case 'participant-left':
      removePeer(m.id);
      break;
    case 'signal':
      // One at a time, in arrival order: a candidate must not overtake its description.
      state.signalChain = state.signalChain.then(() => onPeerSignal(m.from, m.data)).catch((e) => console.warn('signal', e));
      break;
    case 'chat':
      addChat(m.name || 'someone', m.text);
      break;
    case 'ice-servers':
      state.iceServers = m.iceServers || state.iceServers;
      for (const peer of state.peers.values()) peer.pc.setConfiguration(pcConfig());
      break;
    case 'error':
      if (m.reason === 'room full') notice('This room is full.');
      else console.warn('signaling error', m.reason);
      break;
    default:
      break;
  }
}

function sendSignal(to, data) { send({ type: 'signal', to, data }); }

// ---------- peers ----------
function pcConfig() {
  return { iceServers: state.iceServers, iceTransportPolicy: state.relayOnly ? 'relay' : 'all' };
}

function createPeer(pid, name, initiator, initial = {}) {
  removePeer(pid);
  const pc = new RTCPeerConnection(pcConfig());
  const peer = {
    pid, name, pc, polite: state.me < pid, makingOffer: false, ignoreOffer: false,
    dc: null, tile: makeTile(pid, name), lastBytes: 0, lastTime: 0, pending: [], flush: null,
    initiator, created: performance.now(), retries: initial.retries || 0,
  };
  state.peers.set(pid, peer);
  if (state.localStream) for (const t of state.localStream.getTracks()) pc.addTrack(t, state.localStream);
  else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  if (initiator) attachChannel(peer, pc.createDataChannel('chat'));
  pc.ondatachannel = (e) => attachChannel(peer, e.channel);
  pc.ontrack = (e) => {
    const v = peer.tile.querySelector('video');
    if (v.srcObject !== e.streams[0]) v.srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  // Candidates go out in batches (one signaling message per 100 ms), well under the server's
  // per-connection message rate.
  pc.onicecandidate = ({ candidate }) => {
    if (!candidate) return;
    peer.pending.push(candidate.toJSON());
    if (!peer.flush) {
      peer.flush = setTimeout(() => {
        peer.flush = null;
        const candidates = peer.pending.splice(0);
        if (candidates.length) sendSignal(pid, { candidates });
      }, 100);
    }
  };
  pc.onnegotiationneeded = async () => {
    try {
      peer.makingOffer = true;
      await pc.setLocalDescription();
      sendSignal(pid, { description: pc.localDescription });
    } catch (e) {
      console.warn('negotiation', e);
    } finally {
      peer.makingOffer = false;
    }
  };
  pc.oniceconnectionstatechange = () => {
    if (pc.iceConnectionState === 'failed') pc.restartIce();
  };
  return peer;
}

async function onPeerSignal(from, data) {
  if (!data || typeof data !== 'object') return;
  let peer = state.peers.get(from);
  if (data.reset || !peer) {
    peer = createPeer(from, data.name || (peer && peer.name) || 'peer', false);
    if (data.reset) return;
  }
  const pc = peer.pc;
  try {
    if (data.description) {
      const d = data.description;
      const collision = d.type === 'offer' && (peer.makingOffer || pc.signalingState !== 'stable');
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) return;
      await pc.setRemoteDescription(d);
      if (d.type === 'offer') {
        await pc.setLocalDescription();
        sendSignal(from, { description: pc.localDescription });
      }
    } else if (data.candidates || data.candidate) {
      for (const c of data.candidates || [data.candidate]) {
        try { await pc.addIceCandidate(c); } catch (e) { if (!peer.ignoreOffer) console.warn('candidate', e); }
      }
    }
  } catch (e) {
    console.warn('signal', e);
  }
}

function removePeer(pid) {
  const p = state.peers.get(pid);
  if (!p) return;
  if (p.flush) clearTimeout(p.flush);
  try { p.pc.close(); } catch { /* closed */ }
  p.tile.remove();
  state.peers.delete(pid);
  delete state.stats[pid];
}

function makeTile(pid, name) {
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
  t.append(v, label, panel);
  $('tiles').appendChild(t);
  return t;
}

// ---------- chat ----------
function attachChannel(peer, dc) {
  peer.dc = dc;
  dc.onmessage = (e) => {
    try {
      const m = JSON.parse(e.data);
      if (typeof m.text === 'string') addChat(peer.name, m.text.slice(0, 2000));
    } catch { /* ignore */ }
  };
}

function addChat(who, text) {
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

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  $('chat-input').value = '';
  addChat('You', text);
  const peers = [...state.peers.values()];
  const allOpen = peers.length > 0 && peers.every((p) => p.dc && p.dc.readyState === 'open');
  if (allOpen) for (const p of peers) p.dc.send(JSON.stringify({ text }));
  else send({ type: 'chat', text }); // signaling fallback
});

// ---------- stats ----------
// Watchdog: a negotiation that never got off the ground (still "new" after 8 s) is started
// over from scratch by the side that initiated it, a few times at most.
function watchdog() {
  for (const [pid, peer] of [...state.peers]) {
    if (peer.initiator && peer.pc.connectionState === 'new' && peer.retries < 3 &&
        performance.now() - peer.created > 8000) {
      console.warn('negotiation stalled, starting over with', pid);
      createPeer(pid, peer.name, true, { retries: peer.retries + 1 });
      sendSignal(pid, { reset: true, name: state.name });
    }
  }
}

async function updateStats() {
  watchdog();
  for (const [pid, peer] of state.peers) {
    let report;
    try { report = await peer.pc.getStats(); } catch { continue; }
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
    const kbps = peer.lastTime ? ((bytes - peer.lastBytes) * 8) / (now - peer.lastTime) : 0;
    peer.lastBytes = bytes;
    peer.lastTime = now;
    const local = pair && byId.get(pair.localCandidateId);
    const remote = pair && byId.get(pair.remoteCandidateId);
    let route = 'connecting…';
    if (local) {
      if (local.candidateType === 'relay' || (remote && remote.candidateType === 'relay')) {
        route = `relay (${local.relayProtocol || remote.protocol || 'udp'})`;
      } else if (local.candidateType === 'srflx' || local.candidateType === 'prflx') route = 'direct via STUN';
      else route = 'direct';
    }
    const rtt = pair && pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null;
    state.stats[pid] = {
      connectionState: peer.pc.connectionState,
      localType: local ? local.candidateType : null,
      remoteType: remote ? remote.candidateType : null,
      relayProtocol: local ? local.relayProtocol || null : null,
      rttMs: rtt, kbps: Math.round(kbps), framesDecoded, route,
    };
    const el = (k) => peer.tile.querySelector(`[data-testid="${k}-${pid}"]`);
    el('route').textContent = route;
    el('route').className = 'route ' + (route.startsWith('relay') ? 'route-relay' : route.startsWith('direct') ? 'route-direct' : '');
    el('rtt').textContent = rtt === null ? '' : `${rtt} ms`;
    el('bitrate').textContent = `${Math.round(kbps)} kbit/s`;
  }
}

// For automation and debugging: read-only view of the call.
window.natpass = {
  me: () => state.me,
  peers: () => [...state.peers.keys()],
  stats: () => JSON.parse(JSON.stringify(state.stats)),
  relayOnly: () => state.relayOnly,
};

// ---------- media and controls ----------
async function startMedia(constraints) {
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (e) {
    notice('No camera or microphone (' + e.name + '): you can still watch and listen.');
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
  for (const p of state.peers.values()) {
    const sender = p.pc.getSenders().find((x) => x.track && x.track.kind === track.kind);
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

$('relay-only').addEventListener('change', (e) => {
  state.relayOnly = e.target.checked;
  for (const p of state.peers.values()) {
    p.pc.setConfiguration(pcConfig());
    p.pc.restartIce();
  }
});

$('copy-link').addEventListener('click', async () => {
  const u = new URL(location.href);
  u.searchParams.delete('name');
  try { await navigator.clipboard.writeText(u.toString()); $('copy-link').textContent = 'Copied'; } catch { prompt('Room link', u.toString()); }
});

$('leave').addEventListener('click', () => {
  state.leaving = true;
  send({ type: 'leave' });
  for (const pid of [...state.peers.keys()]) removePeer(pid);
  if (state.localStream) for (const t of state.localStream.getTracks()) t.stop();
  sessionStorage.removeItem('natpass-resume-' + state.room);
  setTimeout(() => { if (state.ws) state.ws.close(); location.assign('/'); }, 100);
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
if (initialRoom && /^[A-Za-z0-9_-]{1,64}$/.test(initialRoom)) enterRoom(initialRoom);
