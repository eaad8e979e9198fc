// What the page must agree on with the server: the room-name rule, length limits, and the
// signaling pace. Served by natpass at /api/config from the same constants the server
// enforces, so nothing here is copied by hand.

/** Fetch the page configuration once. */
export async function loadConfig(fetchImpl = globalThis.fetch) {
  const r = await fetchImpl('/api/config', { cache: 'no-store' });
  if (!r.ok) throw new Error(`GET /api/config: ${r.status}`);
  const c = await r.json();
  return Object.freeze({
    roomPattern: new RegExp(c.room.pattern),
    roomPatternSource: c.room.pattern,
    roomMaxLength: c.room.maxLength,
    nameMaxLength: c.name.maxLength,
    chatMaxLength: c.chat.maxLength,
    pacing: Object.freeze({ rate: c.signaling.rate, burst: c.signaling.burst }),
    maxMessage: c.signaling.maxMessage,
  });
}
