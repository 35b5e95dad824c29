// Compiled, never run (`npm run typecheck`): the public types used as the README uses them.
import {
  type ClientEvents,
  ForbiddenError,
  GatewayError,
  HeraldClient,
  type Message,
  type PublishAck,
  type StreamEvent,
  type WebSocketConstructor,
} from "../src/index.js";

// The platform's WebSocket class fits the option.
const platform: WebSocketConstructor = WebSocket;

export async function example(): Promise<void> {
  const client = new HeraldClient({
    url: "http://127.0.0.1:8080",
    token: async () => "jwt",
    WebSocket: platform,
    reconnect: { initialDelay: 100, maxAttempts: 10 },
  });
  await client.connect();
  const sub = await client.subscribe("news.*", (msg: Message) => msg.data);
  await client.subscribe("prices", { since: 41 });
  const ack: PublishAck = await client.publish("news.sport", { score: "3:1" });
  const offset: number | string | undefined = ack.offset;
  const nothing: void = await client.publish("news.sport", 1, { confirm: false });
  for await (const msg of sub) {
    const topic: string = msg.topic;
    // `kind` narrows `data`: a string for text, a Uint8Array for bytes.
    if (msg.kind === "text") {
      const text: string = msg.data;
      void text;
    } else if (msg.kind === "bytes") {
      const bytes: Uint8Array = msg.data;
      void bytes;
    } else {
      const kind: "json" = msg.kind;
      void kind;
    }
    void topic;
  }
  for await (const event of client.http.events("prices", { since: 1 })) {
    const e: StreamEvent = event;
    if (e.type === "message") void e.message.offset;
  }
  const off = client.on("disconnect", ({ code, reason }: ClientEvents["disconnect"][0]) => code + reason);
  off();
  // @ts-expect-error: no such event
  client.on("nope", () => {});
  try {
    await client.http.publish("x", new Uint8Array([1]));
  } catch (err) {
    if (err instanceof ForbiddenError) {
      const code: string = err.code;
      const status: number | undefined = err.status;
      void [code, status];
    } else if (err instanceof GatewayError) {
      void err.requestId;
    }
  }
  void [offset, nothing];
  client.close();
}
