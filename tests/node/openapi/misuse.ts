// Must NOT type-check: proves the generated types are precise, not `any`.
import type { components } from "./api.js";

declare const ack: components["schemas"]["Published"];
export const upper: string = ack.receivers.toUpperCase();
declare const detail: components["schemas"]["TopicDetail"];
export const kind: "queue" = detail.kind;
