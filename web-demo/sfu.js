// The page's side of an SFU room: one RTCPeerConnection to natpass's SFU, whatever the room's
// size. The page offers its own tracks (send only); the SFU answers, then offers every other
// participant's tracks as they come and go (receive only, stream id = that participant's id),
// and the page answers those. Everything goes over the signaling socket:
//   sfu-join {sdp: offer}  -> ack {sdp: answer}      (again after a failure: a fresh session)
//   sfu-offer {sdp}        <- the SFU renegotiates  -> sfu-answer {sdp} -> ack {ok}
//   sfu-restart            <- the SFU lost this session: start over
// Chat goes over a data channel ('chat') to the SFU: {text} out, {from, text} in (the SFU says
// who sent it); until it is open, the caller sends chat over signaling.
// Descriptions are applied one at a time, in order (an SFU offer that arrives before the
// answer to our join waits for it).

/** The layers the page publishes, lowest first (the SFU's layer 0 is the first). */
export const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

export class SfuSession {
  /**
   * @param {object} o
   * @param {RTCConfiguration} o.config
   * @param {MediaStream|null} o.localStream
   * @param {(type: string, body: object) => Promise<object>} o.request a signaling request
   *   and its ack (rejects on `{error}` or when no answer comes)
   * @param {(pid: string, stream: MediaStream) => void} o.onStream a participant's media
   * @param {() => void} [o.onFailed] the connection failed for good (the caller starts over)
   * @param {(from: string, text: string) => void} [o.onChat] a chat line from participant `from`
   */
  constructor(o) {
    this.request = o.request;
    this.onStream = o.onStream;
    this.onFailed = o.onFailed || (() => {});
    this.closed = false;
    this.chain = Promise.resolve();
    const pc = new RTCPeerConnection(o.config);
    this.pc = pc;
    const tracks = o.localStream ? o.localStream.getTracks() : [];
    for (const kind of ['audio', 'video']) {
      const t = tracks.find((x) => x.kind === kind);
      // Nothing to send (a viewer without a camera) still offers the kind, so the SFU's offers
      // of other people's tracks add to a session that already has its transport.
      if (!t) continue;
      // Video in three simulcast layers (a quarter, half and full size): the SFU forwards the
      // full one to whoever pinned this tile or hears this person speak, the small one to the
      // rest. One upload whatever the room's size.
      const sendEncodings = kind === 'video' ? SIMULCAST : undefined;
      pc.addTransceiver(t, { direction: 'sendonly', streams: [o.localStream], sendEncodings });
    }
    // Chat to and from the room, through the SFU (also gives a viewer without camera or
    // microphone a transport for the SFU's later offers of other people's tracks).
    this.chat = pc.createDataChannel('chat');
    const onChat = o.onChat || (() => {});
    this.chat.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m && typeof m.from === 'string' && typeof m.text === 'string') onChat(m.from, m.text);
    };
    // Which participant each received track (by mid) belongs to: the SFU's stream id.
    this.owners = new Map();
    pc.ontrack = (e) => {
      const stream = e.streams[0];
      if (!stream) return;
      this.owners.set(e.transceiver.mid, stream.id);
      this.onStream(stream.id, stream);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && !this.closed) this.onFailed();
    };
  }

  /** Send our offer, apply the SFU's answer. */
  start() {
    return this.serial(async () => {
      await this.pc.setLocalDescription();
      const m = await this.request('sfu-join', { sdp: this.pc.localDescription.sdp });
      if (this.closed) return;
      await this.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
    });
  }

  /** The SFU's offer: apply it and answer. */
  onOffer(sdp) {
    return this.serial(async () => {
      await this.pc.setRemoteDescription({ type: 'offer', sdp });
      await this.pc.setLocalDescription();
      if (this.closed) return;
      await this.request('sfu-answer', { sdp: this.pc.localDescription.sdp });
    });
  }

  serial(fn) {
    const next = this.chain.then(() => (this.closed ? undefined : fn()));
    this.chain = next.catch((e) => { if (!this.closed) console.warn('sfu', e); });
    return next;
  }

  /** Send a chat line over the data channel; false when it is not open (use signaling). */
  sendChat(text) {
    if (this.closed || this.chat.readyState !== 'open') return false;
    try { this.chat.send(JSON.stringify({ text })); return true; } catch { return false; }
  }

  /** The receivers of participant `pid`'s tracks still in the session. */
  receiversOf(pid) {
    return this.pc.getTransceivers()
      .filter((t) => t.mid !== null && this.owners.get(t.mid) === pid && !t.stopped && t.currentDirection !== 'inactive')
      .map((t) => t.receiver);
  }

  close() {
    this.closed = true;
    try { this.pc.close(); } catch { /* closed */ }
  }
}
