import assert from "node:assert/strict";
import { Slots } from "../../src/edge/slots.ts";

Deno.test("slots: items are held until removed, counted, and iterated in slot order", () => {
  const slots = new Slots<string>();
  const a = slots.add("a");
  const b = slots.add("b");
  const c = slots.add("c");
  assert.deepEqual([a, b, c], [0, 1, 2]);
  assert.equal(slots.size, 3);
  slots.remove(b);
  assert.equal(slots.size, 2);
  assert.deepEqual([...slots], ["a", "c"]);
});

Deno.test("slots: a freed slot is taken again, so churn does not grow the array", () => {
  const slots = new Slots<{ n: number }>();
  const kept = slots.add({ n: -1 });
  // 64 held at a time, 10,000 added and removed: the slots in use never go past 65.
  const open: number[] = [];
  let highest = kept;
  for (let n = 0; n < 10_000; n++) {
    if (open.length === 64) slots.remove(open.shift()!);
    const slot = slots.add({ n });
    highest = Math.max(highest, slot);
    open.push(slot);
  }
  assert.equal(highest, 64);
  assert.equal(slots.size, 65);
  assert.deepEqual([...slots].map((item) => item.n).sort((x, y) => x - y), [-1, ...range(10_000 - 64, 10_000)]);
});

Deno.test("slots: removing a slot twice does not count it twice", () => {
  const slots = new Slots<string>();
  const a = slots.add("a");
  slots.add("b");
  slots.remove(a);
  slots.remove(a);
  assert.equal(slots.size, 1);
  // The slot was freed once, so it is handed out once.
  assert.equal(slots.add("c"), a);
  assert.equal(slots.add("d"), 2);
  assert.deepEqual([...slots], ["c", "b", "d"]);
});

Deno.test("slots: an item removed while iterating is not seen", () => {
  const slots = new Slots<string>();
  const at = ["a", "b", "c"].map((s) => slots.add(s));
  const seen: string[] = [];
  for (const item of slots) {
    seen.push(item);
    if (item === "a") slots.remove(at[1]);
  }
  assert.deepEqual(seen, ["a", "c"]);
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}
