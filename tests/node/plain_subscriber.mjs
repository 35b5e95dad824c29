// A plain Node subscriber, as a Node service without Herald reads a channel: RESP over a socket
// (no package needed), each message's bytes decoded as UTF-8 text and parsed with JSON.parse.
// Usage: node plain_subscriber.mjs <port> <channel> <count>; prints one JSON line per message.
import net from "node:net";

const [port, channel, count] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const sock = net.connect(port, "127.0.0.1");
let buf = Buffer.alloc(0);
let seen = 0;

function bulk(s) {
  const b = Buffer.from(s, "utf8");
  return `$${b.length}\r\n${s}\r\n`;
}

// Parses one RESP value at pos; returns [value, next] or null when more bytes are needed.
function parse(pos) {
  const eol = buf.indexOf("\r\n", pos);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[pos]);
  const head = buf.toString("utf8", pos + 1, eol);
  if (kind === ":" || kind === "+") return [head, eol + 2];
  if (kind === "$") {
    const n = Number(head);
    if (buf.length < eol + 2 + n + 2) return null;
    return [buf.toString("utf8", eol + 2, eol + 2 + n), eol + 2 + n + 2];
  }
  if (kind === "*") {
    const items = [];
    let at = eol + 2;
    for (let i = 0; i < Number(head); i++) {
      const r = parse(at);
      if (r === null) return null;
      items.push(r[0]);
      at = r[1];
    }
    return [items, at];
  }
  throw new Error(`unexpected RESP ${kind}${head}`);
}

sock.on("connect", () => sock.write(`*2\r\n${bulk("SUBSCRIBE")}${bulk(channel)}`));
sock.on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  for (;;) {
    const r = parse(0);
    if (r === null) return;
    buf = buf.subarray(r[1]);
    const [kind, , data] = r[0];
    if (kind === "subscribe") {
      console.log(JSON.stringify({ subscribed: channel }));
    } else if (kind === "message") {
      console.log(JSON.stringify({ data: JSON.parse(data) }));
      if (++seen === count) sock.end();
    }
  }
});
