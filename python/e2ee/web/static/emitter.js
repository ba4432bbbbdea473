// Events: the `on`/`off` of a session, a publisher and a subscriber.  A failing handler
// is logged and never stops the others.

export class Emitter {
  #handlers = new Map();

  /** Calls `handler(event)` for every event of `type`; returns a function that stops it. */
  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  emit(type, event) {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(event);
      } catch (e) {
        console.error(`handler for ${type} failed`, e);
      }
    }
  }
}
