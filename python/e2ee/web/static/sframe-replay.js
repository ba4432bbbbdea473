// e2ee v1 frame format in the browser (sframe.js): the replay window of a KID, RFC 3711
// §3.3.2 (docs/protocol.md §6).  Internal: FrameReceiver in sframe.js keeps one per KID.

import { U128_MASK } from "./sframe-base.js";

// ---------------------------------------------------------------------------------------
// Replay window, RFC 3711 §3.3.2 (protocol.md §6)
// ---------------------------------------------------------------------------------------

/** The highest CTR accepted and a bitmap of the `width` CTRs at and below it (bit i:
 * `top - i` was accepted).  Updated only after a frame authenticated. */
export class ReplayWindow {
  constructor(width) {
    this.width = BigInt(width);
    this.top = null;
    this.seen = 0n;
  }

  /** A window for a KID whose bitmap was lost: every CTR up to `top` counts as seen. */
  static resume(width, top) {
    const w = new ReplayWindow(width);
    if (width > 0) {
      w.top = top;
      w.seen = U128_MASK;
    }
    return w;
  }

  /** Would `ctr` be accepted?  (No change.) */
  check(ctr) {
    if (this.width === 0n || this.top === null || ctr > this.top) return true;
    const age = this.top - ctr;
    return age < this.width && ((this.seen >> age) & 1n) === 0n;
  }

  /** Records `ctr`: only after check() and authentication both succeeded. */
  accept(ctr) {
    if (this.width === 0n) return;
    if (this.top === null) {
      this.top = ctr;
      this.seen = 1n;
    } else if (ctr <= this.top) {
      const age = this.top - ctr;
      if (age < this.width) this.seen |= 1n << age;
    } else {
      const shift = ctr - this.top;
      this.seen = shift >= 128n ? 1n : ((this.seen << shift) & U128_MASK) | 1n;
      this.top = ctr;
    }
  }
}
