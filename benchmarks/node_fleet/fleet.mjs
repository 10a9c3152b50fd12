// An independent client fleet for Tidings, written from protocol/PROTOCOL.md alone: N lean
// clients in one Node.js process say hello, ack every delivery and time each one from the
// gateway's sent_at stamp to the moment its frame is read off the socket (the same point the
// load test's "wire" latency uses). Used by benchmarks/independent_fleet.py.
//
// Usage: node fleet.mjs URL TOKENS_JSON EXPECTED_MESSAGES OUT_JSON
// Prints "ready <seconds>" once every client is welcomed, then writes OUT_JSON when every
// client has received EXPECTED_MESSAGES live deliveries (or after 120 s). With TOKENS_JSON
// "bare:N", N clients connect to the load test's bare websockets baseline instead: no
// subprotocol, no hello, ready once open, the same timing of its one broadcast frame.
import { readFileSync, writeFileSync } from "node:fs";
import { encode, decode } from "@msgpack/msgpack";
import WebSocket from "ws";

const [url, tokensPath, expectedArg, outPath] = process.argv.slice(2);
const bare = tokensPath.startsWith("bare:");
const tokens = bare
  ? Array(Number(tokensPath.slice(5))).fill(null)
  : JSON.parse(readFileSync(tokensPath, "utf8"));
const expected = Number(expectedArg);
const latencies = [];
const hellos = [];
let welcomed = 0;
let done = 0;
const t0 = performance.now();

function client(token) {
  const ws = bare
    ? new WebSocket(url, { perMessageDeflate: false })
    : new WebSocket(url, "tidings.v1", { perMessageDeflate: false });
  ws.binaryType = "nodebuffer";
  const state = { started: performance.now(), got: 0 };
  ws.on("open", () => {
    if (bare) {
      welcome(state);
    } else {
      ws.send(encode({ t: "hello", v: 1, token, device: { platform: "node-fleet" } }));
    }
  });
  ws.on("message", (data) => {
    // Stamp and queue: a burst's frames are all read before any is decoded or acked, so the
    // stamp is the read, not the work of the frames before it (as the load test's devices do).
    queued.push([Date.now(), data, ws, state]);
    if (!draining) {
      draining = true;
      setImmediate(drain);
    }
  });
  ws.on("error", (err) => console.error(`client error: ${err.message}`));
}

const queued = [];
let draining = false;

function drain() {
  draining = false;
  const batch = queued.splice(0);
  for (const [readAt, data, ws, state] of batch) {
    const frame = decode(data);
    if (frame.t === "welcome") {
      welcome(state);
    } else if (frame.t === "deliver") {
      if (frame.msg.sent_at) latencies.push(readAt - Number(frame.msg.sent_at));
      if (!bare) ws.send(encode({ t: "ack", seq: frame.seq }));
      if (++state.got === expected && ++done === tokens.length) finish();
    } else if (frame.t === "ping") {
      ws.send(encode({ t: "pong", ts: frame.ts }));
    }
    // any other frame (inbox, ok, a type of a later version) is skipped (PROTOCOL.md §6)
  }
}

function welcome(state) {
  hellos.push(performance.now() - state.started);
  if (++welcomed === tokens.length) {
    console.log(`ready ${((performance.now() - t0) / 1000).toFixed(3)}`);
  }
}

function finish() {
  writeFileSync(outPath, JSON.stringify({ latencies_ms: latencies, hello_ms: hellos }));
  process.exit(0);
}

setTimeout(finish, 120_000);
// Open the connections a few hundred at a time, as the load test's workers do.
let next = 0;
function openSome() {
  for (let n = 0; n < 250 && next < tokens.length; n++) client(tokens[next++]);
  if (next < tokens.length) setTimeout(openSome, 0);
}
openSome();
