// The reference server of the signaling benchmark: Node's socket.io doing the classic Zoom-clone
// relaying (the events of natpass's Socket.IO compatibility set), with the limits natpass applies
// where socket.io has a setting for them (ping interval and timeout, payload size, room cap).
//
//   node server.mjs PORT [ROOM_SIZE]      (listens on 127.0.0.1:PORT; prints "listening PORT")
//
// join_room(room, done): join, done(), `welcome` to the others; a full room gets
// done({error: "room full"}). offer/answer/ice(payload, room): relayed to everyone else in that
// room when the sender is in it.
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2] ?? 0);
const roomSize = Number(process.argv[3] ?? 8);
const ROOM_RULE = /^[A-Za-z0-9_-]{1,64}$/;

const http = createServer();
const io = new Server(http, {
  // The contract's figures: ping every 15 s, drop after 30 s of silence, 64 KiB payloads.
  pingInterval: 15_000,
  pingTimeout: 30_000,
  maxHttpBufferSize: 64 * 1024,
  transports: ['polling', 'websocket'],
  serveClient: false,
  perMessageDeflate: false,
});

io.on('connection', (socket) => {
  socket.on('join_room', (roomName, done) => {
    const ack = typeof done === 'function' ? done : () => {};
    if (typeof roomName !== 'string' || !ROOM_RULE.test(roomName)) {
      ack({ error: 'room must be 1-64 letters, digits, - or _' });
      return;
    }
    const members = io.sockets.adapter.rooms.get(roomName);
    if (members && members.size >= roomSize && !members.has(socket.id)) {
      ack({ error: 'room full' });
      return;
    }
    socket.join(roomName);
    ack();
    socket.to(roomName).emit('welcome');
  });
  for (const event of ['offer', 'answer', 'ice']) {
    socket.on(event, (payload, roomName) => {
      if (typeof roomName === 'string' && roomName !== socket.id && socket.rooms.has(roomName)) {
        socket.to(roomName).emit(event, payload);
      }
    });
  }
});

http.listen(port, '127.0.0.1', () => {
  console.log(`listening ${http.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
