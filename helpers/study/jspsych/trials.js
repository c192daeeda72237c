/*
 * A participant's trial list, exactly as helpers.study.stimuli.trial_list draws it in Python.
 *
 * Python seeds numpy's default generator (PCG64 through SeedSequence) with the first 8 bytes of
 * sha256("<seed>:trials:<code>"), then takes rng.permutation(n) and rng.random(n) < 0.5. This file
 * is the same arithmetic: SHA-256, SeedSequence's entropy pool, PCG64 (XSL-RR, 128-bit state) with
 * numpy's buffered 32-bit draws, Generator.shuffle's masked rejection, and next_double. The same
 * code and seed give the same order and the same top/bottom assignment in the Voila app and here;
 * tests/study/test_web.py checks it against numpy for many codes.
 *
 * Loaded by the page as a plain script (globalThis.StudyTrials) and by Node with require().
 */
(function (root) {
  "use strict";

  // --- SHA-256 (FIPS 180-4), on the UTF-8 bytes of a string ---------------------------------
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);

  function sha256(text) {
    const data = new TextEncoder().encode(text);
    const length = data.length;
    const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
    view.setUint32(padded.length - 4, (length << 3) >>> 0);
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let offset = 0; offset < padded.length; offset += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(offset + 4 * i);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    h.forEach((x, i) => outView.setUint32(4 * i, x));
    return out;
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- numpy's SeedSequence (pool of 4 uint32 words) -------------------------------------------
  const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
  const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, POOL = 4;

  function entropyWords(entropy) { // an unsigned BigInt as little-endian uint32 words ([0] for 0)
    const words = [];
    for (let n = entropy; n > 0n; n >>= 32n) words.push(Number(n & 0xffffffffn));
    return words.length ? words : [0];
  }

  function seedState(entropy, nWords64) {
    const ent = entropyWords(entropy);
    let hashConst = INIT_A;
    const hashmix = (value) => {
      value = (value ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_A) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      return (value ^ (value >>> 16)) >>> 0;
    };
    const mix = (x, y) => {
      const r = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
      return (r ^ (r >>> 16)) >>> 0;
    };
    const pool = [];
    for (let i = 0; i < POOL; i++) pool.push(hashmix(i < ent.length ? ent[i] : 0));
    for (let src = 0; src < POOL; src++) {
      for (let dst = 0; dst < POOL; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    }
    for (let src = POOL; src < ent.length; src++) {
      for (let dst = 0; dst < POOL; dst++) pool[dst] = mix(pool[dst], hashmix(ent[src]));
    }
    let constB = INIT_B;
    const words = [];
    for (let i = 0; i < 2 * nWords64; i++) {
      let value = (pool[i % POOL] ^ constB) >>> 0;
      constB = Math.imul(constB, MULT_B) >>> 0;
      value = Math.imul(value, constB) >>> 0;
      words.push((value ^ (value >>> 16)) >>> 0);
    }
    const out = [];
    for (let k = 0; k < nWords64; k++) out.push(BigInt(words[2 * k]) | (BigInt(words[2 * k + 1]) << 32n));
    return out;
  }

  // --- PCG64 (XSL-RR 128/64), as numpy's Generator draws from it -------------------------------
  const M64 = (1n << 64n) - 1n, M128 = (1n << 128n) - 1n;
  const MULTIPLIER = (2549297995355413924n << 64n) + 4865540595714422341n;

  class PCG64 {
    constructor(entropy) {
      const [s0, s1, i0, i1] = seedState(entropy, 4);
      this.inc = ((((i0 << 64n) | i1) << 1n) | 1n) & M128;
      this.state = 0n;
      this.step();
      this.state = (this.state + ((s0 << 64n) | s1)) & M128;
      this.step();
      this.buffered = null; // the upper half of a 64-bit draw, for the next 32-bit draw
    }
    step() { this.state = (this.state * MULTIPLIER + this.inc) & M128; }
    next64() {
      this.step();
      const rot = this.state >> 122n;
      const x = ((this.state >> 64n) ^ this.state) & M64;
      return ((x >> rot) | (x << ((64n - rot) & 63n))) & M64;
    }
    next32() {
      if (this.buffered !== null) { const value = this.buffered; this.buffered = null; return value; }
      const next = this.next64();
      this.buffered = Number(next >> 32n);
      return Number(next & 0xffffffffn);
    }
    interval(max) { // a uniform integer in [0, max], by masked rejection (numpy's random_interval)
      if (max === 0) return 0;
      let mask = max;
      for (const shift of [1, 2, 4, 8, 16]) mask |= mask >>> shift;
      mask >>>= 0;
      if (max > 0xffffffff) throw new Error("interval: more than 2^32 stimuli");
      for (;;) {
        const value = (this.next32() & mask) >>> 0;
        if (value <= max) return value;
      }
    }
    permutation(n) { // Generator.permutation(n): shuffle of arange(n), last index first
      const a = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = this.interval(i);
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a;
    }
    random() { return Number(this.next64() >> 11n) * (1.0 / 9007199254740992.0); }
  }

  function generator(...keys) { // stimuli._rng: sha256 of the keys joined by ":", first 8 bytes little-endian
    const digest = sha256(keys.map(String).join(":"));
    let entropy = 0n;
    for (let i = 7; i >= 0; i--) entropy = (entropy << 8n) | BigInt(digest[i]);
    return new PCG64(entropy);
  }

  /**
   * The trials of one participant: every stimulus once, in a random order, the ordered grid on top
   * or at the bottom. `stimuli` is in stimuli.csv order: {stimulus_id, layer, basis, component,
   * image_a, image_b, ordered ("a" or "b")}. Returns {trial, stimulus_id, top, bottom,
   * ordered_position, layer, basis, component}, as trial_list does.
   */
  function trialList(stimuli, participant, seed) {
    const rng = generator(seed, "trials", participant);
    const order = rng.permutation(stimuli.length);
    const flips = order.map(() => rng.random() < 0.5);
    return order.map((i, n) => {
      const s = stimuli[i];
      const [top, bottom] = flips[n] ? ["b", "a"] : ["a", "b"];
      return {
        trial: n + 1, stimulus_id: s.stimulus_id, top: s["image_" + top], bottom: s["image_" + bottom],
        ordered_position: s.ordered === top ? "top" : "bottom",
        layer: s.layer, basis: s.basis, component: s.component,
      };
    });
  }

  const api = { sha256, hex, PCG64, generator, trialList };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.StudyTrials = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
