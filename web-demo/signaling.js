// The signaling connection: socket.io-client (the bundle natpass serves at
// /socket.io/socket.io.js, a global `io`) to natpass's Socket.IO server. Reconnection with
// back-off, the WebSocket upgrade and the long-polling fallback come from the library; this
// file keeps the call's identity across reconnects and paces what it sends under the server's
// per-socket rate limit.
//
// Connection states (`Signaling.state`):
//   'closed'     no socket (before start, or the library is reconnecting)
//   'connecting' socket opening
//   'joining'    connected; the resume (in the handshake's auth) or the join not yet answered
//   'ready'      joined: the outbox drains
//   'stopped'    left for good
//
// Identity: every (re)connect carries the resume token in the handshake (`auth`), so the server
// gives the identity back before it handles anything this socket sends, and answers `resumed`
// (then what was addressed to us meanwhile) or `resume-failed` (then we join afresh). When the
// identity is new, queued signals are dropped: they were addressed from the old identity to
// negotiations the other side has already torn down. Chat is kept.
//
// Outbox: send() never drops a message for want of a socket; it waits here while not 'ready'
// and goes out at the pace from /api/config (a full burst on each new socket, as the server's
// bucket does).

const utf8 = new TextEncoder();
/** Room for the packet header: Engine.IO and Socket.IO packet types and an ack id. */
const HEADER = 16;

/**
 * The size the server checks: the event as socket.io-client puts it on the wire (UTF-8 bytes
 * of `[type, body]` in JSON, after the packet header), not the body's length in characters.
 */
function wireSize(type, body) {
  return utf8.encode(JSON.stringify([type, body])).length + HEADER;
}

export class Signaling {
  /**
   * @param {object} o
   * @param {string} o.url the server (origin)
   * @param {string[]} [o.transports] Socket.IO transports (default polling then WebSocket)
   * @param {{rate:number, burst:number}} o.pacing
   * @param {number} o.maxMessage largest message the server accepts (bytes)
   * @param {() => {room:string, name:string, resume?:string}} o.joinRequest
   * @param {(m: object) => void} o.onMessage every message from the server except the join answer
   * @param {(m: object, resumed: boolean) => void} o.onJoined the join (or resume) answer
   * @param {(state: string) => void} [o.onState]
   */
  constructor(o) {
    this.url = o.url;
    this.transports = o.transports || ['polling', 'websocket'];
    this.pacing = o.pacing;
    this.maxMessage = o.maxMessage;
    this.joinRequest = o.joinRequest;
    this.onMessage = o.onMessage;
    this.onJoined = o.onJoined;
    this.onState = o.onState || (() => {});
    this.io = o.io || globalThis.io;
    this.now = o.now || (() => performance.now());
    this.setTimer = o.setTimer || ((f, ms) => setTimeout(f, ms));
    this.clearTimer = o.clearTimer || ((t) => clearTimeout(t));
    this.state = 'closed';
    this.socket = null;
    this.me = null;
    this.joinKey = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    this.queue = []; // [{ type, body }]
    this.tokens = this.pacing.burst;
    this.last = this.now();
    this.pumpTimer = null;
  }

  start() {
    if (this.state === 'stopped' || this.socket) return;
    this.setState('connecting');
    const socket = this.io(this.url, {
      transports: this.transports,
      reconnectionDelay: 500,
      reconnectionDelayMax: 10000,
      // Asked again on every reconnect: the token of the identity to take back, if any.
      auth: (cb) => {
        const resume = this.joinRequest().resume;
        cb(resume ? { resume } : {});
      },
    });
    this.socket = socket;
    const forward = (type, wrap = (b) => b) => socket.on(type, (b) => this.onMessage({ type, ...wrap(b || {}) }));
    socket.on('connect', () => {
      this.tokens = this.pacing.burst;
      this.last = this.now();
      this.setState('joining');
      // With a token the server answers `resumed` or `resume-failed` by itself; if neither
      // comes (a request lost while no node kept the rooms), join with the token after 10 s.
      if (!this.joinRequest().resume) this.join();
      else this.setTimer(() => { if (this.state === 'joining' && socket.connected) this.join(); }, 10000);
    });
    socket.on('resumed', (m) => this.joined(m));
    socket.on('resume-failed', () => this.join());
    forward('participant-joined', (b) => ({ participant: b }));
    forward('participant-left');
    forward('signal');
    forward('chat');
    forward('room-closed');
    forward('room-mode');
    forward('sfu-offer');
    forward('sfu-restart');
    forward('error');
    socket.on('connect_error', () => {
      if (this.state === 'stopped') return;
      this.setState('closed');
      // A refusal by the server (signaling not ready, too many connections from here) is not
      // retried by the library: try again a little later.
      if (!socket.active) this.setTimer(() => { if (this.state !== 'stopped' && !socket.connected) socket.connect(); }, 2000);
    });
    socket.on('disconnect', (reason) => {
      if (this.pumpTimer !== null) { this.clearTimer(this.pumpTimer); this.pumpTimer = null; }
      if (this.state === 'stopped') return;
      this.setState('closed');
      // The library reconnects by itself except when the server closed the socket.
      if (reason === 'io server disconnect') this.setTimer(() => { if (this.state !== 'stopped') socket.connect(); }, 500);
    });
  }

  join() {
    const req = this.joinRequest();
    // The same key on every try of this join: if an answer is lost with the connection, the
    // retry gets the identity the first try made instead of a second one.
    // An answer that never comes is asked for again (same key, so at most one identity).
    const socket = this.socket;
    socket.timeout(10000).emit('join', { room: req.room, name: req.name, key: this.joinKey, resume: req.resume, mode: req.mode }, (err, m) => {
      if (this.state === 'stopped' || this.socket !== socket) return;
      if (err) { if (this.state === 'joining' && socket.connected) this.join(); return; }
      if (!m || m.error) { this.onMessage({ type: 'error', reason: m ? m.error : 'no answer' }); return; }
      this.joined(m);
    });
  }

  joined(m) {
    const resumed = this.me !== null && m.you === this.me;
    // A new identity: signals from the old one are stale, and so are its requests.
    if (this.me !== null && !resumed) {
      for (const q of this.queue) if (q.reply) q.reply(new Error('signaling identity changed'));
      this.queue = this.queue.filter((q) => q.type !== 'signal' && !q.reply);
    }
    this.me = m.you;
    this.setState('ready');
    this.onJoined(m, resumed);
    this.pump();
  }

  /** Queue a request (never dropped for want of a socket); false when too large. */
  send(obj) {
    if (this.state === 'stopped') return false;
    const { type, ...body } = obj;
    const size = wireSize(type, body);
    if (size > this.maxMessage) {
      // The server closes a socket on an oversize message: refuse it here instead.
      console.warn('signaling: message too large, not sent', type, size);
      return false;
    }
    this.queue.push({ type, body });
    this.pump();
    return true;
  }

  /**
   * A request whose answer (its ack) is the result: resolves with it, rejects on `{error}`, on
   * no answer within 10 s, or when the identity changes before it was sent. Paced like the rest.
   */
  request(type, body) {
    return new Promise((resolve, reject) => {
      if (this.state === 'stopped') { reject(new Error('signaling stopped')); return; }
      const reply = (err, m) => {
        if (err) reject(err);
        else if (!m || m.error) reject(new Error(m ? m.error : 'no answer'));
        else resolve(m);
      };
      this.queue.push({ type, body, reply });
      this.pump();
    });
  }

  /** Messages waiting in the outbox. */
  pending() { return this.queue.length; }

  pump() {
    if (this.pumpTimer !== null) return;
    const now = this.now();
    this.tokens = Math.min(this.pacing.burst, this.tokens + ((now - this.last) / 1000) * this.pacing.rate);
    this.last = now;
    if (this.state !== 'ready' || !this.socket || !this.socket.connected) return;
    while (this.queue.length && this.tokens >= 1) {
      const { type, body, reply } = this.queue.shift();
      if (reply) {
        this.socket.timeout(10000).emit(type, body, (err, m) => reply(err, m));
      } else if (type === 'ice-servers') {
        this.socket.emit(type, body, (m) => { if (m && !m.error) this.onMessage({ type, ...m }); });
      } else {
        this.socket.emit(type, body);
      }
      this.tokens -= 1;
    }
    if (this.queue.length) {
      const ms = Math.ceil(((1 - this.tokens) / this.pacing.rate) * 1000) + 5;
      this.pumpTimer = this.setTimer(() => { this.pumpTimer = null; this.pump(); }, ms);
    }
  }

  /** Drop the connection (the library reconnects, as after a network change). For tests. */
  drop() { if (this.socket && this.socket.io.engine) this.socket.io.engine.close(); }

  /** The transport in use ('polling' or 'websocket'), or null. */
  transport() { return this.socket && this.socket.io.engine ? this.socket.io.engine.transport.name : null; }

  /** Leave for good: send `last` (e.g. a leave) if joined, then close. */
  stop(last) {
    if (last && this.state === 'ready' && this.socket && this.socket.connected) {
      const { type, ...body } = last;
      this.socket.emit(type, body);
    }
    this.setState('stopped');
    for (const q of this.queue) if (q.reply) q.reply(new Error('signaling stopped'));
    this.queue = [];
    if (this.pumpTimer !== null) this.clearTimer(this.pumpTimer);
    if (this.socket) this.socket.disconnect();
  }

  setState(s) {
    if (this.state === 'stopped' && s !== 'stopped') return;
    this.state = s;
    this.onState(s);
  }
}
