// The call page's video tiles (app.js): one per stream, in a grid whose tiles take the
// largest 4:3 size that fits, each with a banner that says why it shows no video.  DOM
// only, no state of the call.

const TILE_GAP = 14;
const TILE_ASPECT = 4 / 3;

/** A tile for `name` from `template` (a <template>), added to `grid`: first if local. */
export function newTile(grid, template, name, { isLocal = false } = {}) {
  const tile = template.content.firstElementChild.cloneNode(true);
  tile.querySelector(".name").textContent = name;
  if (isLocal) {
    tile.classList.add("local");
    tile.dataset.state = "ok";
    grid.prepend(tile);
  } else {
    grid.append(tile);
  }
  return tile;
}

/** Sets the tile width that makes the largest 4:3 tiles fit `grid` (in the best number
 * of columns). */
export function layoutGrid(grid) {
  const n = grid.querySelectorAll(".tile").length;
  if (!n) return;
  const { width, height } = grid.getBoundingClientRect();
  let best = { cols: 1, w: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min(
      (width - TILE_GAP * (cols - 1)) / cols,
      ((height - TILE_GAP * (rows - 1)) / rows) * TILE_ASPECT,
    );
    if (w > best.w) best = { cols, w };
  }
  grid.style.setProperty("--tile-w", `${Math.max(160, Math.floor(best.w))}px`);
}

const BANNERS = {
  connecting: ["Connecting…", "Setting up the encrypted stream"],
  mismatch: ["Secret mismatch", "This participant uses a different secret. Ask for the current one."],
  missing: ["No secret set", "Set the shared secret to see and hear this participant."],
  "no-media": ["No media", "Nothing is arriving from this participant right now."],
};

/** Shows `streamState`'s banner on `tile` ("ok": none). */
export function setTileState(tile, streamState) {
  if (tile.dataset.state === streamState) return;
  tile.dataset.state = streamState;
  const text = tile.querySelector(".banner-text");
  const banner = BANNERS[streamState];
  text.replaceChildren();
  if (banner) {
    const small = document.createElement("small");
    small.textContent = banner[1];
    text.append(banner[0], small);
  }
}
