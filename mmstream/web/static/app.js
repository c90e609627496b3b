// mmstream's page: record from the microphone into a stream, list streams, play any of them.
// A plain ES module, no build step. It speaks the WebSocket protocol v1 (docs/protocol.md):
// JSON requests in text frames, audio in binary frames.

const RECORD_MIME = "audio/webm;codecs=opus";
const LIVE_MIME = 'audio/webm; codecs="opus"';
const TIMESLICE_MS = 250;
const LIST_EVERY_MS = 2000;
const SEND_HIGH_WATER = 1 << 20; // pause sending while this much is queued in the socket
const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

const $ = (selector) => document.querySelector(selector);

// A server with auth on wants a token: open the page as /#token=… (a fragment is never sent
// to the server, so it stays out of logs). WebSockets present it in a "hello" request.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

function streamUrl(id) {
  return `/streams/${encodeURIComponent(id)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class RequestError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

// One WebSocket speaking protocol v1: numbered requests, replies matched by "re",
// server-initiated messages (ack, end, error) and binary frames handed to callbacks.
export class Connection {
  constructor(path, { onEvent = () => {}, onBinary = () => {}, onClose = () => {} } = {}) {
    this.path = path;
    this.onEvent = onEvent;
    this.onBinary = onBinary;
    this.onClose = onClose;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl(this.path), ["mmstream.v1"]);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        if (!TOKEN) return resolve(this);
        this.request("hello", { token: TOKEN }).then(() => resolve(this), reject);
      };
      ws.onerror = () => reject(new Error(`cannot connect to ${this.path}`));
      ws.onmessage = (event) => this.#receive(event.data);
      ws.onclose = (event) => {
        const error = new Error(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
        for (const { reject: fail } of this.pending.values()) fail(error);
        this.pending.clear();
        reject(error);
        this.onClose(event);
      };
    });
  }

  #receive(data) {
    if (typeof data !== "string") {
      this.onBinary(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("mmstream: a text frame that is not JSON", data);
      return;
    }
    if ("re" in message && this.pending.has(message.re)) {
      const { resolve, reject } = this.pending.get(message.re);
      this.pending.delete(message.re);
      if (message.ok) resolve(message);
      else reject(new RequestError(message.error?.code ?? "internal", message.error?.message ?? "request failed"));
    } else {
      this.onEvent(message);
    }
  }

  request(op, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ op, id, ...fields }));
    });
  }

  // Backpressure: the browser buffers without limit, so wait while the socket is full.
  async sendBinary(buffer) {
    while (this.ws.bufferedAmount > SEND_HIGH_WATER && this.ws.readyState === WebSocket.OPEN) {
      await sleep(10);
    }
    this.ws.send(buffer);
  }

  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

// -- formatting ------------------------------------------------------------------------------

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function formatClock(seconds) {
  const s = Math.floor(seconds);
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function formatWhen(unixSeconds) {
  if (!unixSeconds) return "";
  const date = new Date(unixSeconds * 1000);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

// A badge says the stream's state ("live" while uploading), never how it is being played:
// a live stream may play over HTTP, and it is still live.
function showStatus(badge, status) {
  badge.textContent = status === "uploading" ? "live" : status;
  badge.className = `badge ${status}`;
}

// A live stream's current title (set with Icecast's /admin/metadata or the "metadata" op):
// the last of stat's titles.
function currentTitle(info) {
  const titles = info.titles ?? [];
  return titles.length ? titles[titles.length - 1].title : "";
}

function newStreamName() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  const random = Math.random().toString(36).slice(2, 6);
  return `rec-${stamp}-${random}`;
}

// -- recording -------------------------------------------------------------------------------

class Recorder {
  constructor(ui) {
    this.ui = ui;
    this.state = "idle"; // idle → starting → recording → stopping → idle
    this.streamId = null;
    this.sent = 0;
    this.acked = 0;
  }

  async start(name) {
    if (!window.MediaRecorder || !MediaRecorder.isTypeSupported(RECORD_MIME)) {
      throw new Error("this browser cannot record WebM/Opus (MediaRecorder)");
    }
    this.state = "starting";
    this.streamId = name || newStreamName();
    this.sent = 0;
    this.acked = 0;
    this.media = await navigator.mediaDevices.getUserMedia({ audio: true });
    try {
      this.conn = new Connection(`/v1/streams/${encodeURIComponent(this.streamId)}`, {
        onEvent: (message) => this.#onEvent(message),
        onClose: () => this.#onClose(),
      });
      await this.conn.open();
      await this.conn.request("create", {
        content_type: RECORD_MIME,
        metadata: { source: "mmstream web page" },
      });
      await this.conn.request("append", { offset: 0 });
    } catch (error) {
      this.#release();
      throw error;
    }
    this.recorder = new MediaRecorder(this.media, { mimeType: RECORD_MIME });
    // Chunks must reach the server in order: each send waits for the one before.
    this.sending = Promise.resolve();
    this.recorder.ondataavailable = (event) => {
      if (!event.data.size) return;
      this.sending = this.sending.then(async () => {
        const buffer = await event.data.arrayBuffer();
        await this.conn.sendBinary(buffer);
        this.sent += buffer.byteLength;
        this.ui.progress(this);
      });
    };
    this.stopped = new Promise((resolve) => (this.recorder.onstop = resolve));
    this.recorder.start(TIMESLICE_MS);
    this.startedAt = performance.now();
    this.state = "recording";
    this.#startMeter();
  }

  elapsed() {
    return this.startedAt ? (performance.now() - this.startedAt) / 1000 : 0;
  }

  async stop() {
    this.state = "stopping";
    this.recorder.stop();
    await this.stopped;
    await this.sending;
    // sync: every frame sent so far is applied and flushed; then the stream becomes READY.
    await this.conn.request("sync");
    const reply = await this.conn.request("finalize");
    this.#release();
    this.state = "idle";
    return reply.stat;
  }

  #onEvent(message) {
    if (message.op === "ack") {
      this.acked = message.offset ?? this.acked;
      this.ui.progress(this);
    } else if (message.op === "error") {
      this.ui.fail(new RequestError(message.error?.code ?? "internal", message.error?.message ?? ""));
    }
  }

  #onClose() {
    if (this.state === "recording") {
      this.ui.fail(new Error("the server closed the connection; recording stopped"));
      this.recorder?.stop();
      this.#release();
      this.state = "idle";
    }
  }

  #startMeter() {
    try {
      this.audioContext = new AudioContext();
      const analyser = this.audioContext.createAnalyser();
      analyser.fftSize = 512;
      this.audioContext.createMediaStreamSource(this.media).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      const tick = () => {
        if (this.state !== "recording") return;
        analyser.getFloatTimeDomainData(samples);
        let peak = 0;
        for (const value of samples) peak = Math.max(peak, Math.abs(value));
        this.ui.level(peak);
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    } catch {
      // A level meter is a nicety; recording works without one.
    }
  }

  #release() {
    this.media?.getTracks().forEach((track) => track.stop());
    this.audioContext?.close().catch(() => {});
    this.audioContext = null;
    this.conn?.close();
    this.ui.level(0);
  }
}

// -- playback --------------------------------------------------------------------------------

const HLS_TYPE = "application/vnd.apple.mpegurl";
const OPUS_MP4_TYPE = 'audio/mp4; codecs="opus"'; // an Opus stream's HLS segments
const REWIND_SECONDS = 30;
const LIVE_DELAY = 3; // "Live" starts this far before the edge: a short burst to start on
const AT_LIVE = 8; // this close to the edge (or closer) counts as live

function authHeaders() {
  return TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
}

// iOS Safari had no MediaSource before 17.1, and has ManagedMediaSource since.
function mediaSourceClass() {
  return window.MediaSource ?? window.ManagedMediaSource;
}

// Where there is no MediaSource at all, a browser that plays HLS itself (Safari on iOS) gets
// the stream's playlist. With auth on it cannot send the token, so the page fetches the
// playlist with it and hands the player the capability the answer carries (docs/hls.md).
// Null when HLS is not the way: MediaSource exists, no native HLS, the server serves no
// HLS for this stream's format (its 404 says why), or it is Opus in fMP4 (EXT-X-MAP) and
// the player does not play Opus in MP4 (Safari before 17): plain HTTP then.
async function hlsSource(audio, id) {
  if (mediaSourceClass() || !audio.canPlayType(HLS_TYPE)) return null;
  const url = `${streamUrl(id)}/index.m3u8`;
  const answer = await fetch(url, { headers: authHeaders(), cache: "no-store" }).catch(() => null);
  if (!answer?.ok) return null;
  const fmp4 = (await answer.text().catch(() => "")).includes("#EXT-X-MAP:");
  if (fmp4 && !audio.canPlayType(OPUS_MP4_TYPE)) return null;
  const capability = answer.headers.get("x-mmstream-capability");
  return capability ? `${url}?${capability}` : url;
}

// A HEAD of the stream (from ?query, if given) with the token: where the answer starts
// (X-Mmstream-Time, null if not said) and the URL the element plays it by. With auth on an
// <audio src> cannot send the token, so the URL carries the capability the answer to the
// token hands on (X-Mmstream-Capability: docs/http.md, *Access control*).
async function probe(id, query = "") {
  const url = query ? `${streamUrl(id)}?${query}` : streamUrl(id);
  const answer = await fetch(url, { method: "HEAD", headers: authHeaders(), cache: "no-store" }).catch(() => null);
  const capability = answer?.ok ? answer.headers.get("x-mmstream-capability") : null;
  const start = Number(answer?.headers.get("x-mmstream-time") ?? NaN);
  return {
    src: capability ? `${url}${query ? "&" : "?"}${capability}` : url,
    start: answer?.ok && Number.isFinite(start) ? start : null,
  };
}

class Player {
  constructor(audio) {
    this.audio = audio;
    this.streamId = null;
    this.live = null;
    this.mode = null; // "mse" (WebSocket tail), "http" (a GET, perhaps from ?t=), "hls"
    // Where the current source starts in the stream (media seconds), and the element's
    // currentTime there (a WebM or Ogg from ?t= may keep the stream's own timestamps).
    this.base = 0;
    this.origin = null;
    this.edge = null; // the live edge as stat said it: {duration, at, growing}
    // Not at loadedmetadata: Chromium says 0 there for a WebM from ?t=30, then 29.97 at play.
    audio.addEventListener("playing", () => {
      if (this.origin === null) this.origin = audio.currentTime;
    });
  }

  #detach() {
    this.live?.close();
    this.live = null;
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
  }

  stop() {
    this.#detach();
    this.audio.pause();
    this.audio.removeAttribute("src");
    this.audio.load();
    this.streamId = null;
    this.mode = null;
    this.edge = null;
  }

  // Growing WebM is fed to MediaSource from a WebSocket tail; where there is no MediaSource,
  // MP3/AAC play as HLS if the browser can; everything else (and READY streams) is plain
  // HTTP with range requests.
  async play(info) {
    this.stop();
    this.streamId = info.stream;
    this.base = 0;
    this.origin = null;
    const webm = (info.content_type ?? "").startsWith("audio/webm");
    const MediaSourceClass = mediaSourceClass();
    if (info.status === "uploading" && webm && MediaSourceClass?.isTypeSupported(LIVE_MIME)) {
      this.mode = "mse";
      await this.#playLive(this.streamId, MediaSourceClass);
      return;
    }
    const hls = await hlsSource(this.audio, this.streamId);
    this.mode = hls ? "hls" : "http";
    this.audio.src = hls ?? (TOKEN ? (await probe(this.streamId)).src : streamUrl(this.streamId));
    await this.audio.play().catch(() => {}); // autoplay may be refused; the controls remain
  }

  // -- the timeline: where the player is in a live stream, and moving in it ---------------

  setEdge(stat) {
    if (stat.stream !== this.streamId || typeof stat.duration !== "number") return;
    this.edge = { duration: stat.duration, at: performance.now(), growing: stat.status === "uploading" };
  }

  // The live edge now (media seconds), extrapolated from the last stat while it grows.
  edgeNow() {
    if (!this.edge) return null;
    const { duration, at, growing } = this.edge;
    return duration + (growing ? (performance.now() - at) / 1000 : 0);
  }

  // Media seconds from the stream's start.
  position() {
    if (this.mode === "hls") return this.audio.currentTime; // the playlist starts at 0
    const played = this.audio.currentTime - (this.origin ?? this.audio.currentTime);
    return this.base + Math.max(0, played);
  }

  behind() {
    const edge = this.edgeNow();
    return edge === null ? null : Math.max(0, edge - this.position());
  }

  rewind(seconds = REWIND_SECONDS) {
    return this.seekTo(this.position() - seconds);
  }

  // Play from ``seconds`` into the stream: a new GET with ?t= (the server starts it on a
  // decodable boundary, the stream's header first), or a seek in the HLS playlist.
  async seekTo(seconds) {
    const edge = this.edgeNow();
    if (edge === null || !this.streamId) return;
    const target = Math.max(0, Math.min(seconds, edge));
    if (edge - target < AT_LIVE) return this.goLive();
    if (this.mode === "hls") {
      this.audio.currentTime = target;
      return;
    }
    const { src, start } = await probe(this.streamId, `t=${target.toFixed(1)}`);
    await this.#playFrom(src, start ?? target);
  }

  async goLive() {
    if (!this.streamId) return;
    if (this.mode === "hls") {
      const seekable = this.audio.seekable;
      if (seekable.length) this.audio.currentTime = Math.max(0, seekable.end(seekable.length - 1) - LIVE_DELAY);
      return;
    }
    // Where the answer starts, from a HEAD (no body). (It also builds the stream's time index
    // to the end, so the next stat's edge is exact even for a stream uploaded faster than
    // real time.)
    const { src, start } = await probe(this.streamId, `t=-${LIVE_DELAY}`);
    if (start !== null && this.edge?.growing) {
      this.edge = { duration: start + LIVE_DELAY, at: performance.now(), growing: true };
    }
    await this.#playFrom(src, start ?? Math.max(0, (this.edgeNow() ?? LIVE_DELAY) - LIVE_DELAY));
  }

  async #playFrom(src, base) {
    this.#detach();
    this.mode = "http";
    this.base = base;
    this.origin = null;
    this.audio.src = src;
    await this.audio.play().catch(() => {});
  }

  async #playLive(id, MediaSourceClass) {
    const source = new MediaSourceClass();
    this.objectUrl = URL.createObjectURL(source);
    if (MediaSourceClass !== window.MediaSource) this.audio.disableRemotePlayback = true; // ManagedMediaSource wants it
    this.audio.src = this.objectUrl;
    await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
    const buffer = source.addSourceBuffer(LIVE_MIME);
    buffer.mode = "sequence";
    const queue = [];
    let ended = false;
    const pump = () => {
      if (buffer.updating || source.readyState !== "open") return;
      const played = this.audio.currentTime;
      if (buffer.buffered.length && played - buffer.buffered.start(0) > 120) {
        buffer.remove(0, played - 60); // keep memory bounded on long live streams
      } else if (queue.length) {
        buffer.appendBuffer(queue.shift());
      } else if (ended) {
        source.endOfStream();
      }
    };
    buffer.addEventListener("updateend", pump);
    // Tail from 0: the WebM header comes first, which a late joiner needs.
    const conn = new Connection(`/v1/streams/${encodeURIComponent(id)}`, {
      onBinary: (data) => {
        queue.push(data);
        pump();
      },
      onEvent: (message) => {
        if (message.op === "end") {
          ended = true;
          pump();
        }
      },
    });
    this.live = conn;
    await conn.open();
    await conn.request("tail", { offset: 0 });
    await this.audio.play().catch(() => {});
  }
}

// -- the page --------------------------------------------------------------------------------

class Page {
  constructor() {
    this.recorder = new Recorder(this);
    this.player = new Player($("#audio"));
    this.streams = [];
    this.error = null;
    this.listing = false;
  }

  async init() {
    $("#record").addEventListener("click", () => this.toggleRecording());
    $("#refresh").addEventListener("click", () => this.refresh());
    $("#player-close").addEventListener("click", () => this.closePlayer());
    $("#rewind").addEventListener("click", () => this.player.rewind().catch((error) => this.fail(error)));
    $("#go-live").addEventListener("click", () => this.player.goLive().catch((error) => this.fail(error)));
    const range = $("#timeline-range");
    range.addEventListener("input", () => (this.dragging = true));
    range.addEventListener("change", () => {
      this.dragging = false;
      this.player.seekTo(Number(range.value)).catch((error) => this.fail(error));
    });
    setInterval(() => this.renderTimeline(), 250);
    $("#audio").addEventListener("error", () => {
      const error = $("#audio").error;
      if (error && this.player.streamId) this.status(`Playback failed: ${error.message || "code " + error.code}`, true);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
    setInterval(() => {
      if (!document.hidden) this.refresh();
    }, LIST_EVERY_MS);
    await this.refresh();
  }

  async connectList() {
    if (this.listConn) return this.listConn;
    const conn = new Connection("/v1", {
      onClose: () => {
        this.listConn = null;
        this.connected(false);
      },
    });
    await conn.open();
    this.listConn = conn;
    this.connected(true);
    return conn;
  }

  async refresh() {
    if (this.listing) return;
    this.listing = true;
    try {
      const conn = await this.connectList();
      const reply = await conn.request("list");
      this.streams = (reply.streams ?? []).slice().sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
      this.render();
      await this.statPlaying(conn);
    } catch (error) {
      this.connected(false);
    } finally {
      this.listing = false;
    }
  }

  // The live edge of the stream playing (stat's duration), for the timeline.
  async statPlaying(conn) {
    const id = this.player.streamId;
    if (!id || (this.player.edge && !this.player.edge.growing)) return; // finished: known
    const reply = await conn.request("stat", { stream: id }).catch(() => null); // deleted meanwhile
    if (reply) this.player.setEdge(reply.stat);
  }

  // A live stream's timeline: how far behind the edge the player is, a slider to move
  // back (or forward) in what has been recorded, and "Live" to return to the edge.
  renderTimeline() {
    const player = this.player;
    const shown = Boolean(player.streamId && player.edge?.growing);
    $("#timeline").hidden = !shown;
    if (!shown) return;
    const edge = player.edgeNow();
    const behind = player.behind();
    const range = $("#timeline-range");
    range.max = String(Math.ceil(edge));
    const atLive = behind < AT_LIVE;
    if (!this.dragging) range.value = String(atLive ? range.max : Math.floor(player.position()));
    range.setAttribute("aria-valuetext", `${formatClock(player.position())} of ${formatClock(edge)}`);
    $("#timeline-behind").textContent = atLive ? "" : `−${formatClock(behind)}`;
    $("#go-live").setAttribute("aria-pressed", String(atLive));
  }

  connected(up) {
    const conn = $("#conn");
    conn.textContent = up ? "connected" : "offline";
    conn.className = `conn ${up ? "up" : "down"}`;
  }

  render() {
    const list = $("#streams");
    const items = this.streams.map((info) => this.renderItem(info));
    list.replaceChildren(...items);
    $("#empty").hidden = this.streams.length > 0;
    // The player's badge follows the list: a live stream becomes ready while it plays.
    const playing = this.streams.find((info) => info.stream === this.player.streamId);
    if (playing) showStatus($("#player-badge"), playing.status);
    $("#player-now").textContent = playing && currentTitle(playing) ? `♪ ${currentTitle(playing)}` : "";
  }

  renderItem(info) {
    const id = info.stream;
    const item = document.createElement("li");
    item.className = "stream";
    item.dataset.streamId = id;
    item.dataset.status = info.status;
    if (id === this.player.streamId) item.classList.add("playing");

    const name = document.createElement("div");
    name.className = "name";
    name.textContent = id;

    const meta = document.createElement("div");
    meta.className = "meta";
    const badge = document.createElement("span");
    showStatus(badge, info.status);
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = formatBytes(info.size ?? 0);
    const when = document.createElement("span");
    when.textContent = formatWhen(info.created_at);
    const type = document.createElement("span");
    type.textContent = (info.content_type ?? "").split(";")[0];
    meta.append(badge, size, type, when);
    const title = currentTitle(info);
    if (title) {
      const now = document.createElement("span");
      now.className = "now";
      now.textContent = `♪ ${title}`;
      now.title = "Now playing";
      meta.append(now);
    }

    const actions = document.createElement("div");
    actions.className = "actions";
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play";
    play.textContent = "▶";
    play.setAttribute("aria-label", `Play ${id}`);
    play.disabled = info.status === "error";
    play.addEventListener("click", () => this.play(info));
    const download = document.createElement("a");
    download.href = streamUrl(id);
    download.download = id;
    download.textContent = "⤓";
    download.title = "Download";
    download.setAttribute("aria-label", `Download ${id}`);
    // With auth on a link cannot send the token either: it asks for a capability first,
    // then follows the link with it (that click, the page's own, is not trusted: it goes).
    download.addEventListener("click", async (event) => {
      if (!TOKEN || !event.isTrusted) return;
      event.preventDefault();
      download.href = (await probe(id)).src;
      download.click();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "ghost";
    remove.textContent = "✕";
    remove.title = "Delete";
    remove.setAttribute("aria-label", `Delete ${id}`);
    remove.addEventListener("click", () => this.remove(id));
    actions.append(play, download, remove);

    item.append(name, meta, actions);
    return item;
  }

  async play(info) {
    const id = info.stream;
    $("#player").hidden = false;
    $("#player-name").textContent = id;
    showStatus($("#player-badge"), info.status);
    try {
      await this.player.play(info);
      if (info.status === "uploading") await this.statPlaying(await this.connectList());
    } catch (error) {
      this.fail(error);
    }
    this.render();
    this.renderTimeline();
  }

  closePlayer() {
    this.player.stop();
    $("#player").hidden = true;
    this.render();
  }

  async remove(id) {
    if (!confirm(`Delete stream “${id}”?`)) return;
    try {
      const conn = await this.connectList();
      await conn.request("delete", { stream: id });
      if (this.player.streamId === id) this.closePlayer();
    } catch (error) {
      this.fail(error);
    }
    await this.refresh();
  }

  async toggleRecording() {
    const button = $("#record");
    if (this.recorder.state === "recording") {
      button.disabled = true;
      this.status("Finishing…");
      try {
        const stat = await this.recorder.stop();
        this.status(`Saved “${stat.stream}” (${formatBytes(stat.size)}).`);
      } catch (error) {
        this.fail(error);
      } finally {
        this.recording(false);
        button.disabled = false;
        clearInterval(this.clock);
        await this.refresh();
      }
      return;
    }
    if (this.recorder.state !== "idle") return;
    const input = $("#stream-name");
    const name = input.value.trim();
    if (name && !ID_PATTERN.test(name)) {
      this.status("A name uses letters, digits, “-” and “_” (at most 128).", true);
      input.focus();
      return;
    }
    button.disabled = true;
    this.error = null;
    try {
      await this.recorder.start(name);
      this.recording(true);
      this.status(`Recording “${this.recorder.streamId}”…`);
      this.clock = setInterval(() => ($("#rec-time").textContent = formatClock(this.recorder.elapsed())), 200);
      input.value = "";
      this.refresh();
    } catch (error) {
      this.recorder.state = "idle";
      this.fail(error);
    } finally {
      button.disabled = false;
    }
  }

  recording(on) {
    const button = $("#record");
    button.setAttribute("aria-pressed", String(on));
    button.querySelector(".rec-label").textContent = on ? "Stop" : "Record";
    if (on) $("#rec-time").textContent = "0:00";
  }

  progress(recorder) {
    if (recorder.state === "recording") {
      this.status(`Recording “${recorder.streamId}” · ${formatBytes(recorder.sent)} sent`);
    }
  }

  level(peak) {
    $("#meter-fill").style.width = `${Math.min(100, Math.round(peak * 140))}%`;
  }

  status(text, isError = false) {
    const line = $("#rec-status");
    line.textContent = text;
    line.style.color = isError ? "var(--rec)" : "";
  }

  fail(error) {
    this.error = error;
    console.error(error);
    const text = error?.name === "NotAllowedError" ? "Microphone access was refused." : String(error.message ?? error);
    this.status(text, true);
  }
}

const page = new Page();
// For people poking at the console, and for the end-to-end test.
window.mmstream = page;
page.init();
