// One remote participant: its RTCPeerConnection and the negotiation state around it.
//
// Per-peer state (fields of Peer):
//   pid, name        the remote participant
//   polite           perfect-negotiation role: the side with the smaller id yields on glare
//   session          id of the current negotiation session. A session starts when one side
//                    (the initiator) sends {reset, session}; both sides then tag every signal
//                    with it, and a signal of any other session is dropped. This is what keeps a
//                    late answer or candidate of a torn-down connection from being applied to its
//                    replacement (glare after a reset).
//   initiator        true on the side that started the session (it runs the stall watchdog)
//   pc               the RTCPeerConnection of this session
//   makingOffer, ignoreOffer   perfect negotiation (RFC 8829 style glare handling); the
//                    non-initiator waits for the first offer, so glare is left to renegotiations
//   pending, flush   local ICE candidates waiting for their batch (one message per 100 ms)
//   dc               the chat data channel (created by the initiator)
//   retries, lastProgress, startedAt  watchdog bookkeeping: restarts so far, when this
//                    session's negotiation last moved (it began, a candidate was gathered or
//                    arrived, a description was applied, a state changed), when it began
//   connectedAt      when the connection last became 'connected' (null while it is not)
//   closed, whenClosed set once the session is over; pending operations stop waiting then
//
// A peer never outlives its session: a new session (a reset from either side, or the
// watchdog) closes the old RTCPeerConnection and builds a new Peer.

export function newSessionId(random = () => crypto.getRandomValues(new Uint32Array(2))) {
  return Array.from(random(), (x) => x.toString(16).padStart(8, '0')).join('');
}

/**
 * Does a reset (`{session, replaces}`) from the other side end our session with it (`peer`,
 * null when there is none)? A reset that names our session in `replaces` was sent after its
 * sender saw our session (its watchdog, a relay-only switch): it always wins. Otherwise both
 * sides started a session at once, neither having seen the other's: the polite side yields and
 * the other keeps its own. Before `replaces`, a side whose own reset was still unanswered
 * ignored every reset from a polite peer; once its restarts were used up, a peer that had
 * already given way to it and then started over was ignored for good (a six-person relay-only
 * room ended with sessions stuck in 'new' on both sides).
 */
export function acceptsReset(peer, reset) {
  if (!peer) return true;
  if (peer.session === reset.session) return false; // a duplicate
  if (reset.replaces === peer.session) return true;
  return !(peer.starting() && !peer.polite);
}

export class Peer {
  /**
   * @param {object} o
   * @param {string} o.pid @param {string} o.name @param {string} o.me our own id
   * @param {string} o.session @param {boolean} o.initiator @param {number} [o.retries]
   * @param {RTCConfiguration} o.config @param {MediaStream|null} o.localStream
   * @param {(data: object) => void} o.signal send a signal to this peer (session added here)
   * @param {(stream: MediaStream) => void} o.onTrack
   * @param {(text: string) => void} o.onChat
   * @param {() => void} [o.onBye] the other side's tab is closing
   * @param {(m: {audio: boolean, video: boolean}) => void} [o.onMedia] the other side muted or unmuted
   * @param {() => void} [o.onOpen] the data channel is open
   */
  constructor(o) {
    this.pid = o.pid;
    this.name = o.name;
    this.polite = o.me < o.pid;
    this.session = o.session;
    this.initiator = o.initiator;
    this.retries = o.retries || 0;
    this.lastProgress = performance.now();
    this.startedAt = this.lastProgress;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.pending = [];
    this.flush = null;
    this.dc = null;
    this.closed = false;
    // Operations on a closed RTCPeerConnection may never settle (the spec aborts them without
    // resolving their promises): every await below races this, so a closed peer can never stall
    // the signals queued behind it.
    this.whenClosed = new Promise((resolve) => { this.markClosed = resolve; });
    this.sendSignal = (data) => { if (!this.closed) o.signal({ ...data, session: this.session }); };
    this.onChat = o.onChat;
    this.onBye = o.onBye;
    this.onMedia = o.onMedia;
    this.onOpen = o.onOpen;
    const pc = new RTCPeerConnection(o.config);
    this.pc = pc;
    if (o.localStream) for (const t of o.localStream.getTracks()) pc.addTrack(t, o.localStream);
    else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    if (this.initiator) this.attachChannel(pc.createDataChannel('chat'));
    pc.ondatachannel = (e) => this.attachChannel(e.channel);
    pc.ontrack = (e) => o.onTrack(e.streams[0] || new MediaStream([e.track]));
    pc.onicegatheringstatechange = () => this.progressed();
    pc.onsignalingstatechange = () => this.progressed();
    pc.onicecandidate = ({ candidate }) => {
      this.progressed();
      if (!candidate) return;
      this.pending.push(candidate.toJSON());
      if (!this.flush) {
        this.flush = setTimeout(() => {
          this.flush = null;
          const candidates = this.pending.splice(0);
          if (candidates.length) this.sendSignal({ candidates });
        }, 100);
      }
    };
    pc.onnegotiationneeded = async () => {
      // The side that did not start the session answers first instead of offering at once:
      // both offering at session start is glare on every connection. Once its answer is set the
      // browser raises negotiationneeded again if anything is still missing.
      if (!this.initiator && !pc.remoteDescription) return;
      try {
        this.makingOffer = true;
        await this.guard(pc.setLocalDescription());
        this.sendSignal({ description: pc.localDescription });
      } catch (e) {
        if (!this.closed) console.warn('negotiation', e);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed') pc.restartIce();
    };
    this.connectedAt = null;
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') { if (this.connectedAt === null) this.connectedAt = performance.now(); }
      else this.connectedAt = null;
    };
  }

  /** Apply a signal of this session (description or candidates). */
  async handleSignal(data) {
    if (this.closed) return;
    const pc = this.pc;
    try {
      if (data.description) {
        const d = data.description;
        const collision = d.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await this.guard(pc.setRemoteDescription(d));
        this.progressed();
        if (d.type === 'offer' && !this.closed) {
          await this.guard(pc.setLocalDescription());
          this.sendSignal({ description: pc.localDescription });
        }
      } else if (Array.isArray(data.candidates)) {
        for (const c of data.candidates) {
          if (this.closed) return;
          this.progressed();
          try { await this.guard(pc.addIceCandidate(c)); } catch (e) { if (!this.ignoreOffer) console.warn('candidate', e); }
        }
      }
    } catch (e) {
      if (!this.closed) console.warn('signal', e);
    }
  }

  /** `p`, or nothing once the peer is closed. */
  guard(p) { return Promise.race([p, this.whenClosed]); }

  /** The negotiation moved: the stall watchdog counts from now. */
  progressed() { this.lastProgress = performance.now(); }

  /**
   * The watchdog's rule: a session that never got off the ground — nothing moved for 8 s on the
   * side that started it, 12 s on the other (whose offer may never come: both sides gave way to
   * the other's reset after a signaling outage, or the initiator's page is gone), so they never
   * start over at once; twice as long after each restart. A slow machine whose gathering is
   * still producing candidates is left alone: starting over there only takes more TURN
   * allocations and starts the wait again.
   */
  stalled(now = performance.now()) {
    if (this.pc.connectionState !== 'new') return false;
    // After three restarts the wait stops growing (64 s / 96 s) but never ends: while both
    // are in the room, a session that cannot start is tried again, slowly. Progress that never
    // leads anywhere (a gathering that keeps going, candidates of an offer that never came) holds
    // the restart off for four waits at most.
    const wait = (this.initiator ? 8000 : 12000) * 2 ** Math.min(this.retries, 3);
    return now - this.lastProgress > wait || now - this.startedAt > 4 * wait;
  }

  /**
   * The watchdog's other rule: connected for 10 s, the other side says its camera is on
   * (`remoteVideo`, from its data channel), and not one byte of video has arrived. A connection
   * whose media never started is started over, by whichever side sees it, a few times at most.
   */
  silent(remoteVideo, videoBytes, now = performance.now()) {
    return remoteVideo === true && videoBytes === 0 && this.connectedAt !== null &&
      now - this.connectedAt > 10000 && this.retries < 3;
  }

  /** Is our own reset still unanswered (we started the session and nothing connected yet)? */
  starting() {
    return this.initiator && this.pc.connectionState === 'new';
  }

  attachChannel(dc) {
    this.dc = dc;
    dc.onopen = () => { if (this.onOpen) this.onOpen(); };
    dc.onmessage = (e) => {
      try {
        const m = JSON.parse(e.data);
        if (typeof m.text === 'string') this.onChat(m.text);
        else if (m.bye === true && this.onBye) this.onBye();
        else if (m.media && typeof m.media === 'object' && this.onMedia) this.onMedia({ audio: m.media.audio !== false, video: m.media.video !== false });
      } catch { /* not ours */ }
    };
  }

  /** For debugging: where this negotiation stands. */
  describe() {
    const pc = this.pc;
    return {
      session: this.session, initiator: this.initiator, polite: this.polite, retries: this.retries,
      makingOffer: this.makingOffer, signalingState: pc.signalingState, iceGatheringState: pc.iceGatheringState,
      iceConnectionState: pc.iceConnectionState, connectionState: pc.connectionState,
    };
  }

  chatOpen() { return !!this.dc && this.dc.readyState === 'open'; }

  close() {
    this.closed = true;
    this.markClosed();
    if (this.flush) clearTimeout(this.flush);
    try { this.pc.close(); } catch { /* closed */ }
  }
}
