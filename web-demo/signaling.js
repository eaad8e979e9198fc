// The signaling connection: one WebSocket to natpass's /ws, reconnected with backoff, that
// resumes its identity, and an outbox paced under the server's per-connection rate limit.
//
// Connection states (`Signaling.state`):
//   'closed'     no socket (before start, or waiting to reconnect)
//   'connecting' socket opening
//   'joining'    socket open, the join (with the resume token) sent, its answer not yet in
//   'ready'      joined: the outbox drains
//   'stopped'    left for good
//
// Outbox rules: send() never drops a message because the socket is not open: it waits in the
// outbox. Only the join is ever written while 'joining', so nothing queued can reach the new
// socket before the resume join. When the join answer shows the identity was resumed, the
// outbox drains in order; when it shows a new identity (the grace period had expired),
// queued signals are dropped: they were addressed from the old identity to negotiations the
// other side has already torn down. Chat is kept. The pace (messages per second and burst)
// comes from the server's /api/config; each new socket starts with a full burst, as the
// server's bucket does.

export class Signaling {
  /**
   * @param {object} o
   * @param {string} o.url WebSocket URL
   * @param {{rate:number, burst:number}} o.pacing
   * @param {number} o.maxMessage largest message the server accepts (bytes)
   * @param {() => object} o.joinRequest the join message to send on every (re)connect
   * @param {(m: object) => void} o.onMessage every message from the server except the join answer
   * @param {(m: object, resumed: boolean) => void} o.onJoined the join answer
   * @param {(state: string) => void} [o.onState]
   */
  constructor(o) {
    this.url = o.url;
    this.pacing = o.pacing;
    this.maxMessage = o.maxMessage;
    this.joinRequest = o.joinRequest;
    this.onMessage = o.onMessage;
    this.onJoined = o.onJoined;
    this.onState = o.onState || (() => {});
    this.WebSocket = o.WebSocketImpl || globalThis.WebSocket;
    this.now = o.now || (() => performance.now());
    this.setTimer = o.setTimer || ((f, ms) => setTimeout(f, ms));
    this.clearTimer = o.clearTimer || ((t) => clearTimeout(t));
    this.random = o.random || Math.random;
    this.state = 'closed';
    this.ws = null;
    this.me = null;
    this.reqId = 0;
    this.joinId = null;
    this.queue = []; // [{ text, kind }]
    this.tokens = this.pacing.burst;
    this.last = this.now();
    this.pumpTimer = null;
    this.reconnectTimer = null;
    this.backoff = 500;
  }

  start() {
    if (this.state === 'stopped') return;
    this.setState('connecting');
    const ws = new this.WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.backoff = 500;
      this.tokens = this.pacing.burst;
      this.last = this.now();
      this.setState('joining');
      const join = { ...this.joinRequest(), id: ++this.reqId };
      this.joinId = join.id;
      ws.send(JSON.stringify(join));
      this.tokens -= 1;
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m && m.type === 'joined' && this.state === 'joining') {
        const resumed = this.me !== null && m.you === this.me;
        if (this.me !== null && !resumed) {
          // A new identity: signals from the old one are stale.
          this.queue = this.queue.filter((q) => q.kind !== 'signal');
        }
        this.me = m.you;
        this.setState('ready');
        this.onJoined(m, resumed);
        this.pump();
        return;
      }
      this.onMessage(m);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.pumpTimer !== null) { this.clearTimer(this.pumpTimer); this.pumpTimer = null; }
      if (this.state === 'stopped') return;
      this.setState('closed');
      const wait = this.backoff + this.random() * 250;
      this.backoff = Math.min(this.backoff * 2, 10000);
      this.reconnectTimer = this.setTimer(() => { this.reconnectTimer = null; this.start(); }, wait);
    };
  }

  /** Queue a request (never dropped for want of a socket); returns its id, or null when too large. */
  send(obj) {
    if (this.state === 'stopped') return null;
    const id = ++this.reqId;
    const text = JSON.stringify({ ...obj, id });
    if (text.length > this.maxMessage) {
      // The server closes a connection on an oversize message: refuse it here instead.
      console.warn('signaling: message too large, not sent', obj.type, text.length);
      return null;
    }
    this.queue.push({ text, kind: obj.type });
    this.pump();
    return id;
  }

  /** Messages waiting in the outbox. */
  pending() { return this.queue.length; }

  pump() {
    if (this.pumpTimer !== null) return;
    const now = this.now();
    this.tokens = Math.min(this.pacing.burst, this.tokens + ((now - this.last) / 1000) * this.pacing.rate);
    this.last = now;
    if (this.state !== 'ready' || !this.ws || this.ws.readyState !== 1) return;
    while (this.queue.length && this.tokens >= 1) {
      this.ws.send(this.queue.shift().text);
      this.tokens -= 1;
    }
    if (this.queue.length) {
      const ms = Math.ceil(((1 - this.tokens) / this.pacing.rate) * 1000) + 5;
      this.pumpTimer = this.setTimer(() => { this.pumpTimer = null; this.pump(); }, ms);
    }
  }

  /** Drop the socket (it reconnects, as after a network change). For tests and debugging. */
  drop() { if (this.ws) this.ws.close(); }

  /** Leave for good: send `last` (e.g. a leave) if the socket is ready, then close. */
  stop(last) {
    if (last && this.state === 'ready' && this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify({ ...last, id: ++this.reqId }));
    }
    this.setState('stopped');
    this.queue = [];
    if (this.reconnectTimer !== null) this.clearTimer(this.reconnectTimer);
    if (this.pumpTimer !== null) this.clearTimer(this.pumpTimer);
    if (this.ws) this.ws.close();
  }

  setState(s) {
    if (this.state === 'stopped' && s !== 'stopped') return;
    this.state = s;
    this.onState(s);
  }
}
