/**
 * A set of short-lived objects kept in an array of slots, for the front's open connections (`front.ts`). A `Set` does
 * the same job but, under a connection opened and closed per request (as devices send them), made V8 promote objects
 * on every request (bench/gc.sh and docs/benchmarks.md show it). Here an item takes the most recently freed slot, and
 * a removed item's slot is cleared at once.
 * @module
 */

/** The slot an item was given, which it must hand back to {@linkcode Slots.remove}. */
export type Slot = number;

/**
 * Items in slots: add and remove in constant time without allocating (once the array has grown to the most items
 * held at once), iterate in slot order. The array keeps that length: for the front, the most connections open at
 * once, which the process's file descriptor limit bounds (8 bytes a slot).
 */
export class Slots<T> {
  #items: (T | undefined)[] = [];
  #free: Slot[] = [];
  #size = 0;

  /** How many items are held. */
  get size(): number {
    return this.#size;
  }

  /** Holds `item` and says in which slot. */
  add(item: T): Slot {
    const slot = this.#free.pop() ?? this.#items.length;
    this.#items[slot] = item;
    this.#size++;
    return slot;
  }

  /** Lets go of the item in `slot` (one {@linkcode add} gave); a slot already empty is left as it is. */
  remove(slot: Slot): void {
    if (this.#items[slot] === undefined) return;
    this.#items[slot] = undefined;
    this.#free.push(slot);
    this.#size--;
  }

  /** The items held, in slot order. Items added while iterating may or may not be seen; removed ones are not. */
  *[Symbol.iterator](): IterableIterator<T> {
    const items = this.#items;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (item !== undefined) yield item;
    }
  }
}
