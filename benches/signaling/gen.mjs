// Load generator of the signaling benchmark (scripts/bench-signaling.sh runs it).
//
//   node gen.mjs run --url http://127.0.0.1:PORT --pid SERVER_PID --name LABEL [--out FILE.json]
//   node gen.mjs table NATPASS.json NODE.json        (the side-by-side table and docs lines)
//
// `run` drives one Socket.IO server with the Zoom-clone compatibility events, loopback only:
//  1. memory: SIO_CLIENTS websocket clients (spread over source addresses 127.1.x.y, at most
//     SIO_PER_ADDR per address, so a per-IP cap is never what is measured), joined in rooms of
//     SIO_ROOM via `join_room`; server VmRSS before and after, divided by the clients joined;
//  2. CPU: every client emits `ice`(payload, room) at a fixed total rate (SIO_RATE emits/s);
//     deliveries counted at the receivers over SIO_WINDOW s; server utime+stime from
//     /proc/PID/stat over the same window; deliveries per server CPU-second;
//  3. saturation: a bounded ramp (SIO_RAMP_START emits/s, ×1.5 per SIO_STEP s step, at most
//     SIO_STEPS steps) until the deliveries fall below 90 % of what was sent, the server uses
//     95 % of a core, or the generator cannot keep its rate (over 92 % of SIO_GEN_CORES cores);
//     the best deliveries/s seen is the saturation rate; then p50/p99 delivery latency (a
//     timestamp in the payload, read at the receivers) at half of it for SIO_WINDOW s, with the
//     generator's own event-loop delay beside it.
// On a shared machine: before each phase it waits (SIO_QUIET_WAIT s in all, default 30) for the
// other processes to use at most SIO_QUIET cores (0.3), reports their CPU in every window, and
// re-runs (at most three times) a ramp step lost to them or to a generator stall.
// The clients run in SIO_WORKERS child processes; every room lives inside one worker, so the
// timestamps are compared on one monotonic clock. SIO_CLIENT=sio (default) uses the npm
// socket.io-client; SIO_CLIENT=raw speaks the same Engine.IO 4 / Socket.IO 5 frames over `ws`
// directly, about half the generator CPU per delivery, for when the generator is the bottleneck.
// SIO_PHASES=memory stops after phase 1 (SIO_HOLD s later).
// Everything is bounded: SIO_MAX_SECS (default 200) kills the run and its workers.
import { fork, execSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const env = (name, dflt) => (process.env[name] === undefined || process.env[name] === '' ? dflt : process.env[name]);
const num = (name, dflt) => Number(env(name, dflt));
const MAX_SECS = num('SIO_MAX_SECS', 200);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- latency histogram (µs): 10 µs steps to 10 ms, 100 µs to 100 ms, 1 ms to 10 s ----
const HIST_LEN = 11_801;
function bucket(us) {
  if (!(us >= 0)) return 0;
  if (us < 10_000) return Math.floor(us / 10);
  if (us < 100_000) return 1000 + Math.floor((us - 10_000) / 100);
  if (us < 10_000_000) return 1900 + Math.floor((us - 100_000) / 1000);
  return HIST_LEN - 1;
}
function bucketUpper(i) {
  if (i < 1000) return (i + 1) * 10;
  if (i < 1900) return 10_000 + (i - 999) * 100;
  if (i < HIST_LEN - 1) return 100_000 + (i - 1899) * 1000;
  return Infinity;
}
function quantile(hist, q) {
  let total = 0;
  for (const c of hist) total += c;
  if (total === 0) return null;
  const want = Math.ceil(total * q);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= want) return bucketUpper(i);
  }
  return null;
}

// A plausible trickled candidate, the size of what a browser sends.
const CANDIDATE =
  'candidate:842163049 1 udp 1677729535 198.51.100.7 53705 typ srflx raddr 10.0.0.5 rport 53705 generation 0 ufrag a1B2 network-id 1 network-cost 10';

// ===================================== worker =====================================
async function worker() {
  const hard = setTimeout(() => process.exit(3), (MAX_SECS + 10) * 1000);
  hard.unref();
  process.on('disconnect', () => process.exit(0));
  const kind = env('SIO_CLIENT', 'sio');
  const { io } = kind === 'sio' ? await import('socket.io-client') : { io: null };
  const { WebSocket } = kind === 'raw' ? await import('ws') : { WebSocket: null };

  const clients = [];
  let sent = 0;
  let expected = 0;
  let recv = 0;
  let skipped = 0;
  let dropped = 0;
  let recording = false;
  let hist = new Uint32Array(HIST_LEN);
  const loopDelay = monitorEventLoopDelay({ resolution: 2 });
  const onIce = (t) => {
    recv++;
    if (recording) hist[bucket((performance.now() - t) * 1000)]++;
  };

  function openSio(url, ip, room) {
    return new Promise((resolve) => {
      const s = io(url, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: 15_000,
        perMessageDeflate: false,
        origin: url,
        ...(ip ? { localAddress: ip } : {}),
      });
      const fail = (why) => {
        s.close();
        resolve({ error: why });
      };
      s.once('connect_error', (e) => fail(`connect: ${e.message}`));
      s.once('connect', () => {
        s.timeout(15_000).emit('join_room', room, (err, res) => {
          if (err) return fail('join: no ack');
          if (res && res.error) return fail(`join: ${res.error}`);
          s.on('ice', (p) => onIce(p.at));
          s.on('disconnect', () => dropped++);
          resolve({
            emitIce: () => s.emit('ice', { at: performance.now(), candidate: CANDIDATE, sdpMid: '0', sdpMLineIndex: 0 }, room),
            close: () => s.close(),
          });
        });
      });
    });
  }

  // Engine.IO 4 / Socket.IO 5 over a bare websocket: `0{…}` open, `40` connect, `2`/`3`
  // ping/pong, `42[…]` event, `42N[…]`/`43N[…]` event with ack / ack.
  function openRaw(url, ip, room) {
    return new Promise((resolve) => {
      const wsUrl = `${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
      const ws = new WebSocket(wsUrl, { perMessageDeflate: false, origin: url, ...(ip ? { localAddress: ip } : {}) });
      let state = 'open';
      let done = false;
      const timer = setTimeout(() => fail('timeout'), 15_000);
      const fail = (why) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        ws.terminate();
        resolve({ error: why });
      };
      const prefix = `42["ice",{"at":`;
      const tail = `,"candidate":${JSON.stringify(CANDIDATE)},"sdpMid":"0","sdpMLineIndex":0},${JSON.stringify(room)}]`;
      ws.on('error', (e) => fail(`connect: ${e.message}`));
      ws.on('close', () => {
        if (done && state === 'joined') dropped++;
        fail('closed');
      });
      ws.on('message', (data) => {
        const c0 = data[0];
        if (c0 === 0x32 && data.length === 1) return ws.send('3');
        if (state === 'joined') {
          // `42["ice",{"at":123.4,…}]`: the timestamp is read without parsing the rest (a
          // server may reorder the keys: natpass sends them sorted, so `at` stays first).
          if (c0 === 0x34 && data[1] === 0x32 && data[3] === 0x22 && data[4] === 0x69) {
            let s = data.toString('latin1', 0, 48);
            let at = s.indexOf('"at":');
            if (at < 0) {
              s = data.toString('latin1');
              at = s.indexOf('"at":');
            }
            if (at > 0) onIce(parseFloat(s.slice(at + 5)));
          }
          return;
        }
        const text = data.toString();
        if (state === 'open' && c0 === 0x30) {
          state = 'connecting';
          ws.send('40');
        } else if (state === 'connecting' && text.startsWith('40')) {
          state = 'joining';
          ws.send(`421["join_room",${JSON.stringify(room)}]`);
        } else if (state === 'connecting' && text.startsWith('44')) {
          fail(`connect: ${text.slice(2, 120)}`);
        } else if (state === 'joining' && text.startsWith('431')) {
          const args = JSON.parse(text.slice(3));
          if (args[0] && args[0].error) return fail(`join: ${args[0].error}`);
          state = 'joined';
          done = true;
          clearTimeout(timer);
          resolve({ emitIce: () => ws.send(prefix + performance.now() + tail), close: () => ws.terminate() });
        }
      });
    });
  }

  const open = kind === 'raw' ? openRaw : openSio;
  let rate = 0;
  let rateStart = 0;
  let rateSent = 0;
  let next = 0;
  let ticker = null;
  const fanout = []; // members - 1 of each client's room, same index as `clients`

  function tick() {
    if (rate <= 0 || clients.length === 0) return;
    const due = Math.floor(((performance.now() - rateStart) / 1000) * rate) - rateSent;
    let n = due;
    const cap = Math.max(1, Math.ceil(rate * 0.1)); // catch up at most 100 ms of lateness
    if (n > cap) {
      skipped += n - cap;
      rateSent += n - cap;
      n = cap;
    }
    for (let k = 0; k < n; k++) {
      const i = next;
      next = (next + 1) % clients.length;
      clients[i].emitIce();
      expected += fanout[i];
    }
    sent += n;
    rateSent += n;
  }

  process.on('message', async (m) => {
    const reply = (body) => process.send({ id: m.id, ...body });
    if (m.cmd === 'connect') {
      const t0 = performance.now();
      const errors = {};
      const byRoom = new Map();
      const results = new Array(m.count);
      let nextIdx = 0;
      async function lane() {
        while (nextIdx < m.count) {
          const k = nextIdx++;
          const i = m.first + k;
          const room = `${m.prefix}${Math.floor(i / m.roomSize)}`;
          let ip = null;
          if (m.perAddr > 0) {
            const a = Math.floor(i / m.perAddr);
            ip = `127.1.${Math.floor(a / 250)}.${(a % 250) + 1}`;
          }
          const c = await open(m.url, ip, room);
          if (c.error) {
            errors[c.error] = (errors[c.error] || 0) + 1;
          } else {
            results[k] = { c, room };
            byRoom.set(room, (byRoom.get(room) || 0) + 1);
          }
        }
      }
      await Promise.all(Array.from({ length: m.concurrency }, lane));
      for (const r of results) {
        if (!r) continue;
        clients.push(r.c);
        fanout.push(byRoom.get(r.room) - 1);
      }
      reply({ ok: clients.length, failed: m.count - clients.length, errors, ms: performance.now() - t0 });
    } else if (m.cmd === 'rate') {
      rate = m.rate;
      rateStart = performance.now();
      rateSent = 0;
      if (rate > 0 && !ticker) ticker = setInterval(tick, 2);
      if (rate <= 0 && ticker) {
        clearInterval(ticker);
        ticker = null;
      }
      reply({});
    } else if (m.cmd === 'record') {
      recording = m.on;
      if (m.on) {
        hist = new Uint32Array(HIST_LEN);
        loopDelay.reset();
        loopDelay.enable();
      } else {
        loopDelay.disable();
      }
      reply({});
    } else if (m.cmd === 'snap') {
      const cpu = process.cpuUsage();
      const body = { sent, expected, recv, skipped, dropped, cpuUs: cpu.user + cpu.system };
      if (m.hist) {
        body.hist = Array.from(hist);
        // The generator's own stalls (GC, a busy core) land in the measured latency too.
        body.loopP99us = loopDelay.percentile(99) / 1000;
        body.loopMaxUs = loopDelay.max / 1000;
      }
      reply(body);
    } else if (m.cmd === 'close') {
      for (const c of clients) c.close();
      reply({});
      setTimeout(() => process.exit(0), 200);
    }
  });
  process.send({ ready: true });
}

// =================================== coordinator ===================================
function procStat(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks
}
// Busy CPU of the whole machine (clock ticks): every core's total minus idle and iowait.
function machineBusy() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, x) => a + x, 0);
  return total - f[3] - f[4];
}
function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function run(args) {
  const url = args.url;
  const pid = Number(args.pid);
  if (!url || !/^https?:\/\/(127\.\d+\.\d+\.\d+|\[::1\]|localhost)(:\d+)?$/.test(url)) throw new Error('--url must be a loopback http URL');
  if (!pid) throw new Error('--pid is required');
  const hz = Number(execSync('getconf CLK_TCK').toString().trim()) || 100;
  const deadline = setTimeout(() => {
    console.error('gen: SIO_MAX_SECS reached, stopping');
    for (const w of workers) w.proc.kill('SIGKILL');
    process.exit(2);
  }, MAX_SECS * 1000);
  deadline.unref();

  const N = num('SIO_CLIENTS', 10_000);
  const W = Math.max(1, num('SIO_WORKERS', 4));
  const ROOM = num('SIO_ROOM', 8);
  const PER_ADDR = num('SIO_PER_ADDR', 30);
  const RATE = num('SIO_RATE', 5000);
  const WINDOW = num('SIO_WINDOW', 8);
  const STEP = num('SIO_STEP', 2);
  const STEPS = num('SIO_STEPS', 10);
  const RAMP_START = num('SIO_RAMP_START', 2000);
  const GEN_CORES = num('SIO_GEN_CORES', 1);
  const log = (...a) => console.error(`[${args.name}]`, ...a);

  // Spawn workers; each gets whole rooms.
  const rooms = Math.ceil(N / ROOM);
  const workers = [];
  let pending = new Map();
  let seq = 0;
  for (let w = 0; w < W; w++) {
    const proc = fork(fileURLToPath(import.meta.url), ['worker'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = new Promise((r) => proc.once('message', r));
    proc.on('message', (m) => {
      const p = pending.get(m.id);
      if (p) {
        pending.delete(m.id);
        p(m);
      }
    });
    proc.on('exit', (code) => {
      if (code !== 0 && code !== null) log(`worker ${w} exited with ${code}`);
    });
    workers.push({ proc, ready });
  }
  await Promise.all(workers.map((w) => w.ready));
  const ask = (w, msg) =>
    new Promise((resolve) => {
      const id = ++seq;
      pending.set(id, resolve);
      w.proc.send({ id, ...msg });
    });
  const all = (msg) => Promise.all(workers.map((w) => ask(w, msg)));
  const sum = (snaps, k) => snaps.reduce((a, s) => a + s[k], 0);

  // A shared machine: before each phase wait (bounded in total) for the other load to drop.
  const QUIET = num('SIO_QUIET', 0.3);
  let quietLeft = num('SIO_QUIET_WAIT', 30);
  async function waitQuiet(phase) {
    let warned = false;
    while (quietLeft > 0) {
      const b0 = machineBusy();
      await sleep(1000);
      quietLeft -= 1;
      const busy = (machineBusy() - b0) / hz;
      if (busy <= QUIET) return;
      if (!warned) log(`${phase}: machine busy (${busy.toFixed(2)} cores): waiting for <= ${QUIET} (${quietLeft} s of waiting left)`);
      warned = true;
    }
    if (warned) log(`${phase}: measuring on a busy machine (see "others")`);
  }
  await waitQuiet('memory');

  // 1. memory at N idle websocket connections.
  await sleep(500);
  const rssBefore = rssKiB(pid);
  let first = 0;
  const t0 = performance.now();
  const connectRes = await Promise.all(
    workers.map((w, i) => {
      const myRooms = Math.floor(rooms / W) + (i < rooms % W ? 1 : 0);
      const from = first;
      const count = Math.min(myRooms * ROOM, N - from);
      first += count;
      return ask(w, { cmd: 'connect', url, first: from, count, roomSize: ROOM, perAddr: PER_ADDR, prefix: 'bench', concurrency: 32 });
    }),
  );
  const connectSecs = (performance.now() - t0) / 1000;
  const connected = sum(connectRes, 'ok');
  const errors = {};
  for (const r of connectRes) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] || 0) + v;
  log(`${connected}/${N} clients joined in ${connectSecs.toFixed(1)} s`, Object.keys(errors).length ? errors : '');
  await sleep(num('SIO_SETTLE', 3) * 1000);
  const rssAfter = rssKiB(pid);
  const memory = {
    clients: N,
    connected,
    errors,
    connectSecs,
    rssBeforeKiB: rssBefore,
    rssAfterKiB: rssAfter,
    bytesPerClient: connected > 0 ? ((rssAfter - rssBefore) * 1024) / connected : null,
  };
  log(`RSS ${rssBefore} -> ${rssAfter} KiB: ${memory.bytesPerClient?.toFixed(0)} B per client`);
  if (connected === 0) throw new Error('no client could join');
  if (env('SIO_PHASES', 'all') === 'memory') {
    // Memory only (quick A/B of a memory change; heap profiles): clients stay until exit.
    await sleep(num('SIO_HOLD', 0) * 1000);
    await Promise.all(workers.map((w) => ask(w, { cmd: 'close' })));
    return;
  }

  // Offered rate split in proportion to each worker's clients.
  const share = connectRes.map((r) => r.ok / connected);
  const setRate = (total) => Promise.all(workers.map((w, i) => ask(w, { cmd: 'rate', rate: total * share[i] })));
  async function measure(seconds, withHist = false) {
    const a = await all({ cmd: 'snap' });
    const c0 = procStat(pid);
    const m0 = machineBusy();
    const me0 = process.cpuUsage();
    const s0 = performance.now();
    await sleep(seconds * 1000);
    const b = await all({ cmd: 'snap', hist: withHist });
    const c1 = procStat(pid);
    const m1 = machineBusy();
    const me = process.cpuUsage(me0);
    const secs = (performance.now() - s0) / 1000;
    const d = (k) => sum(b, k) - sum(a, k);
    const out = {
      secs,
      emitsPerSec: d('sent') / secs,
      deliveriesPerSec: d('recv') / secs,
      delivered: d('expected') > 0 ? d('recv') / d('expected') : null,
      skipped: d('skipped'),
      dropped: sum(b, 'dropped'),
      serverCpu: (c1 - c0) / hz / secs,
      genCpu: (d('cpuUs') + me.user + me.system) / 1e6 / secs,
    };
    // What else ran on the machine meanwhile (other builds and tests on a shared VM).
    out.otherCpu = Math.max(0, (m1 - m0) / hz / secs - out.serverCpu - out.genCpu);
    if (withHist) {
      const h = new Array(HIST_LEN).fill(0);
      for (const s of b) for (let i = 0; i < HIST_LEN; i++) h[i] += s.hist[i];
      out.p50us = quantile(h, 0.5);
      out.p99us = quantile(h, 0.99);
      out.maxus = quantile(h, 1);
      out.genLoopDelayP99us = Math.max(...b.map((x) => x.loopP99us));
      out.genLoopDelayMaxUs = Math.max(...b.map((x) => x.loopMaxUs));
    }
    return out;
  }
  async function drain() {
    await setRate(0);
    let last = -1;
    for (let i = 0; i < 40; i++) {
      await sleep(250);
      const r = sum(await all({ cmd: 'snap' }), 'recv');
      if (r === last) return;
      last = r;
    }
    log('deliveries still arriving 10 s after the load stopped');
  }

  // 2. deliveries per server CPU-second at a fixed rate.
  await waitQuiet('cpu');
  await setRate(RATE);
  await sleep(1000);
  const cpu = await measure(WINDOW);
  cpu.deliveriesPerCpuSec = cpu.serverCpu > 0 ? cpu.deliveriesPerSec / cpu.serverCpu : null;
  await drain();
  log(
    `${RATE} emits/s: ${cpu.deliveriesPerSec.toFixed(0)} deliveries/s (${(100 * cpu.delivered).toFixed(2)} %), server ${cpu.serverCpu.toFixed(3)} CPU, ${cpu.deliveriesPerCpuSec?.toFixed(0)} deliveries/CPU-s, generator ${cpu.genCpu.toFixed(2)} CPU, others ${cpu.otherCpu.toFixed(2)} CPU`,
  );

  if (!(cpu.delivered > 0.5)) log('warning: under half of the expected deliveries were counted: is the server relaying `ice`?');

  // 3. saturation ramp, then latency at half of it.
  await waitQuiet('ramp');
  const ramp = [];
  let r = RAMP_START;
  let retries = 3; // a step lost to other load is run again, at most three times
  for (let i = 0; i < STEPS; i++) {
    await setRate(r);
    await sleep(500);
    const m = await measure(STEP);
    m.offeredEmits = r;
    ramp.push(m);
    const behind = m.delivered !== null && m.delivered < 0.9;
    // Neither side near a full core while other processes ran: the step lost CPU to them.
    const starved = m.otherCpu > 0.3 && m.serverCpu < 0.85 && m.genCpu < 0.85 * GEN_CORES;
    let why = behind
      ? 'server behind'
      : m.serverCpu > 0.95
        ? 'server core full'
        : m.skipped > 0.01 * r * m.secs || m.emitsPerSec < 0.95 * r || m.genCpu > 0.92 * GEN_CORES
          ? 'generator'
          : null;
    if (why && starved) why = 'starved by other load';
    // A generator stall (GC, a scheduling hiccup) with CPU to spare is not its limit either.
    if (why === 'generator' && m.genCpu < 0.85 * GEN_CORES) why = 'generator stalled';
    log(
      `ramp ${r.toFixed(0)} emits/s: ${m.deliveriesPerSec.toFixed(0)} deliveries/s (${(100 * (m.delivered ?? 0)).toFixed(1)} %), server ${m.serverCpu.toFixed(2)} CPU, generator ${m.genCpu.toFixed(2)} CPU, others ${m.otherCpu.toFixed(2)}${why ? ` -> ${why}` : ''}`,
    );
    m.stop = why;
    if ((why === 'starved by other load' || why === 'generator stalled') && retries > 0) {
      retries--;
      i--;
      await drain();
      await waitQuiet('ramp');
      continue;
    }
    if (why) break;
    r *= 1.5;
  }
  await drain();
  const best = ramp.reduce((a, m) => (m.deliveriesPerSec > a.deliveriesPerSec ? m : a), ramp[0]);
  const saturation = {
    deliveriesPerSec: best.deliveriesPerSec,
    boundBy: ramp[ramp.length - 1].stop ?? 'ramp end (not saturated)',
  };
  const meanFanout = cpu.emitsPerSec > 0 ? cpu.deliveriesPerSec / cpu.emitsPerSec : ROOM - 1;
  const halfEmits = saturation.deliveriesPerSec / 2 / meanFanout;
  // A window the server lost to other load is measured again once.
  let lat;
  for (let attempt = 0; attempt < 2; attempt++) {
    await waitQuiet('latency');
    await setRate(halfEmits);
    await sleep(1000);
    await all({ cmd: 'record', on: true });
    lat = await measure(WINDOW, true);
    await all({ cmd: 'record', on: false });
    await drain();
    lat.offeredEmits = halfEmits;
    lat.starved = lat.otherCpu > 0.3 && lat.delivered !== null && lat.delivered < 0.97;
    log(
      `latency at ${halfEmits.toFixed(0)} emits/s (${lat.deliveriesPerSec.toFixed(0)} deliveries/s, ${(100 * (lat.delivered ?? 0)).toFixed(1)} %): p50 ${lat.p50us} µs, p99 ${lat.p99us} µs; generator event-loop delay p99 ${lat.genLoopDelayP99us.toFixed(0)} µs, max ${lat.genLoopDelayMaxUs.toFixed(0)} µs; others ${lat.otherCpu.toFixed(2)} CPU${lat.starved ? ' -> starved by other load' : ''}`,
    );
    if (!lat.starved) break;
  }

  await Promise.all(workers.map((w) => ask(w, { cmd: 'close' })));
  const result = {
    name: args.name,
    url,
    client: env('SIO_CLIENT', 'sio'),
    settings: { N, W, ROOM, PER_ADDR, RATE, WINDOW, STEP, STEPS, RAMP_START },
    memory,
    cpu,
    ramp,
    saturation,
    latency: lat,
    rssEndKiB: rssKiB(pid),
  };
  if (args.out) writeFileSync(args.out, JSON.stringify(result, null, 1));
  else console.log(JSON.stringify(result));
}

function table(aPath, bPath) {
  const a = JSON.parse(readFileSync(aPath, 'utf8'));
  const b = JSON.parse(readFileSync(bPath, 'utf8'));
  const f0 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Math.round(x).toLocaleString('en-US'));
  const f2 = (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : x.toFixed(2));
  const ratio = (x, y) => (x && y ? `${(x / y).toFixed(2)}×` : '–');
  const ms = (us) => (us === null || us === undefined ? '–' : (us / 1000).toFixed(2));
  const s = a.settings;
  const starved = (x) => (x.latency.starved ? ' (starved by other load)' : '');
  const rows = [
    ['idle websocket clients joined', `${f0(a.memory.connected)} / ${f0(s.N)}`, `${f0(b.memory.connected)} / ${f0(b.settings.N)}`, ''],
    ['connect + join time, s', f2(a.memory.connectSecs), f2(b.memory.connectSecs), ratio(a.memory.connectSecs, b.memory.connectSecs)],
    ['server RSS before → after, MiB', `${f2(a.memory.rssBeforeKiB / 1024)} → ${f2(a.memory.rssAfterKiB / 1024)}`, `${f2(b.memory.rssBeforeKiB / 1024)} → ${f2(b.memory.rssAfterKiB / 1024)}`, ''],
    ['**memory per idle client, KiB**', f2(a.memory.bytesPerClient / 1024), f2(b.memory.bytesPerClient / 1024), ratio(a.memory.bytesPerClient, b.memory.bytesPerClient)],
    [`deliveries/s at ${f0(s.RATE)} ice emits/s (rooms of ${s.ROOM})`, `${f0(a.cpu.deliveriesPerSec)} (${f2(100 * a.cpu.delivered)} %)`, `${f0(b.cpu.deliveriesPerSec)} (${f2(100 * b.cpu.delivered)} %)`, ''],
    ['server CPU, cores', f2(a.cpu.serverCpu), f2(b.cpu.serverCpu), ratio(a.cpu.serverCpu, b.cpu.serverCpu)],
    ['**relayed messages per server CPU-second**', f0(a.cpu.deliveriesPerCpuSec), f0(b.cpu.deliveriesPerCpuSec), ratio(a.cpu.deliveriesPerCpuSec, b.cpu.deliveriesPerCpuSec)],
    ['generator CPU, cores', f2(a.cpu.genCpu), f2(b.cpu.genCpu), ''],
    ['other processes on the machine meanwhile, cores', f2(a.cpu.otherCpu), f2(b.cpu.otherCpu), ''],
    ['**saturation, deliveries/s** (what ended the ramp)', `${f0(a.saturation.deliveriesPerSec)} (${a.saturation.boundBy})`, `${f0(b.saturation.deliveriesPerSec)} (${b.saturation.boundBy})`, ratio(a.saturation.deliveriesPerSec, b.saturation.deliveriesPerSec)],
    ['half of it, deliveries/s', f0(a.latency.deliveriesPerSec), f0(b.latency.deliveriesPerSec), ''],
    ['latency p50 at half saturation, ms', ms(a.latency.p50us), ms(b.latency.p50us), ratio(a.latency.p50us, b.latency.p50us)],
    ['**latency p99 at half saturation, ms**', ms(a.latency.p99us) + starved(a), ms(b.latency.p99us) + starved(b), ratio(a.latency.p99us, b.latency.p99us)],
    ['generator event-loop delay p99 / max meanwhile, ms', `${ms(a.latency.genLoopDelayP99us)} / ${ms(a.latency.genLoopDelayMaxUs)}`, `${ms(b.latency.genLoopDelayP99us)} / ${ms(b.latency.genLoopDelayMaxUs)}`, ''],
  ];
  console.log(`| figure | ${a.name} | ${b.name} | ${a.name} / ${b.name} |`);
  console.log('|---|---|---|---|');
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  console.log('');
  console.log('Lines for docs/performance.md:');
  console.log(
    `- memory per idle websocket client (${f0(a.memory.connected)} vs ${f0(b.memory.connected)} joined, rooms of ${s.ROOM}): ${a.name} ${f2(a.memory.bytesPerClient / 1024)} KiB, ${b.name} ${f2(b.memory.bytesPerClient / 1024)} KiB (${ratio(a.memory.bytesPerClient, b.memory.bytesPerClient)})`,
  );
  console.log(
    `- relayed messages per server CPU-second at ${f0(s.RATE)} ice emits/s in rooms of ${s.ROOM}: ${a.name} ${f0(a.cpu.deliveriesPerCpuSec)}, ${b.name} ${f0(b.cpu.deliveriesPerCpuSec)} (${ratio(a.cpu.deliveriesPerCpuSec, b.cpu.deliveriesPerCpuSec)})`,
  );
  console.log(
    `- saturation: ${a.name} ${f0(a.saturation.deliveriesPerSec)} deliveries/s (${a.saturation.boundBy}), ${b.name} ${f0(b.saturation.deliveriesPerSec)} (${b.saturation.boundBy}); p99 delivery latency at half of each: ${a.name} ${ms(a.latency.p99us)} ms at ${f0(a.latency.deliveriesPerSec)}/s, ${b.name} ${ms(b.latency.p99us)} ms at ${f0(b.latency.deliveriesPerSec)}/s`,
  );
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) out[argv[i].slice(2)] = argv[++i];
    else (out._ ??= []).push(argv[i]);
  }
  return out;
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'worker') {
  worker();
} else if (mode === 'run') {
  run(parseArgs(rest)).then(
    () => process.exit(0),
    (e) => {
      console.error(`gen: ${e.message}`);
      process.exit(1);
    },
  );
} else if (mode === 'table') {
  table(rest[0], rest[1]);
} else {
  console.error('usage: node gen.mjs run --url URL --pid PID --name LABEL [--out FILE] | table A.json B.json');
  process.exit(64);
}
