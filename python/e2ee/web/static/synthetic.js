// Synthetic media a receiver can verify, the browser twin of python/e2ee/tools/synthetic.py:
// a 320x240 picture with a dark left half (luma 40) and a bright right half (luma 210)
// and a grey 32x32 block sliding along the middle band (so the encoder makes real delta
// frames), and a 400 Hz tone.  Python's looks_like_source() and has_tone() recognise
// them after decoding; videoHalves() here is the same check on a <video> element.

/** Luma of the halves of the synthetic picture (as LEFT_LUMA / RIGHT_LUMA in Python). */
export const LEFT_LUMA = 40;
export const RIGHT_LUMA = 210;
export const TONE_HZ = 400;

/** The grey level whose BT.601 limited-range luma is `y`: (y - 16) * 255 / 219. */
const greyFor = (y) => Math.round(((y - 16) * 255) / 219);

/** BT.601 limited-range luma of an RGB pixel (what the encoder's conversion gives). */
export const luma = (r, g, b) => 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255;

/**
 * A canvas-drawn video track.  Frames are drawn on a timer (not requestAnimationFrame,
 * which a hidden page does not run).
 *
 * @returns {{track: MediaStreamTrack, canvas: HTMLCanvasElement, stop: () => void}}
 */
export function syntheticVideoTrack({ width = 320, height = 240, fps = 30 } = {}) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { alpha: false });
  const left = `rgb(${Array(3).fill(greyFor(LEFT_LUMA)).join(",")})`;
  const right = `rgb(${Array(3).fill(greyFor(RIGHT_LUMA)).join(",")})`;
  const block = `rgb(${Array(3).fill(greyFor(128)).join(",")})`;
  const half = Math.floor(width / 2);
  let n = 0;
  const draw = () => {
    ctx.fillStyle = left;
    ctx.fillRect(0, 0, half, height);
    ctx.fillStyle = right;
    ctx.fillRect(half, 0, width - half, height);
    ctx.fillStyle = block;
    ctx.fillRect((n * 4) % (width - 32), Math.floor(height / 2) - 16, 32, 32);
    n++;
  };
  draw();
  const stream = canvas.captureStream(fps);
  const timer = setInterval(draw, 1000 / fps);
  const [track] = stream.getVideoTracks();
  track.contentHint = "detail";
  const stop = () => {
    clearInterval(timer);
    track.stop();
  };
  track.addEventListener("ended", () => clearInterval(timer));
  return { track, canvas, stop };
}

/**
 * A WebAudio sine tone as an audio track.
 *
 * @returns {{track: MediaStreamTrack, context: AudioContext, stop: () => void}}
 */
export function syntheticAudioTrack({ hz = TONE_HZ, gain = 0.25 } = {}) {
  const context = new AudioContext({ sampleRate: 48000 });
  const osc = new OscillatorNode(context, { type: "sine", frequency: hz });
  const amp = new GainNode(context, { gain });
  const dest = new MediaStreamAudioDestinationNode(context, { channelCount: 1 });
  osc.connect(amp).connect(dest);
  osc.start();
  context.resume().catch(() => {});
  const [track] = dest.stream.getAudioTracks();
  const stop = () => {
    osc.stop();
    track.stop();
    context.close().catch(() => {});
  };
  return { track, context, stop };
}

/**
 * The mean luma of the left and right halves of what a <video> element shows, sampled
 * on the rows Python's video_halves() uses (away from the sliding block), or null before
 * the element has a picture.
 *
 * @param {HTMLVideoElement} video
 * @returns {{left: number, right: number, width: number, height: number} | null}
 */
export function videoHalves(video) {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h) return null;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, w, h);
  const rows = [h >> 3, h >> 2, (3 * h) >> 2, (7 * h) >> 3];
  let left = 0;
  let right = 0;
  let nl = 0;
  let nr = 0;
  for (const y of rows) {
    const px = ctx.getImageData(0, y, w, 1).data;
    for (let x = 4; x < w - 4; x++) {
      if (x >= (w >> 1) - 4 && x < (w >> 1) + 4) continue;
      const v = luma(px[4 * x], px[4 * x + 1], px[4 * x + 2]);
      if (x < w >> 1) {
        left += v;
        nl++;
      } else {
        right += v;
        nr++;
      }
    }
  }
  return { left: left / nl, right: right / nr, width: w, height: h };
}

/** Whether sampled halves show the synthetic picture (as Python's looks_like_source). */
export function looksLikeSource(halves) {
  return (
    halves !== null && Math.abs(halves.left - LEFT_LUMA) < 20 && Math.abs(halves.right - RIGHT_LUMA) < 20
  );
}
