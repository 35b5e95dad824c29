// The shard placement of docs/scaling.md ("Shards"), written from the docs alone, checked
// against tests/vectors/shards-v1.json: proof that another language reproduces it.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

function placementKey(topic) {
  let root = topic;
  while (root.endsWith(".dead") && root.length > ".dead".length) root = root.slice(0, -5);
  return root;
}

export function shardOf(names, topic) {
  const key = placementKey(topic);
  let best = null;
  let bestScore = -1n;
  for (const name of names) {
    const digest = createHash("sha256").update(`${name}\n${key}`, "utf8").digest();
    const score = digest.readBigUInt64BE(0);
    if (score > bestScore || (score === bestScore && name < best)) {
      best = name;
      bestScore = score;
    }
  }
  return best;
}

const { cases } = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const c of cases) {
  const got = shardOf(c.shards, c.topic);
  if (got !== c.shard) {
    console.log(`MISMATCH ${JSON.stringify(c)}: ${got}`);
    failed++;
  }
}
console.log(`${cases.length - failed}/${cases.length} vectors match`);
process.exit(failed ? 1 : 0);
