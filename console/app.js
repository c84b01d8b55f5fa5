// The gp8 console (docs/console.md): a fleet map, vehicle pages, alerts, the theft view and
// geofences, over the public API and the live stream only. Plain DOM, no framework: every text
// from the server goes through textContent (the page's CSP forbids inline script anyway).

import { Api, ApiError, Stream } from "./api.js";

const KEY_STORAGE = "gp8.console.key";
const ROLE_RANK = { viewer: 0, manager: 1, admin: 2 };
// How the map colours a vehicle (docs/console.md, "States"): by the age of its last fix, its
// speed, and whether a theft is suspected or a case is open.
const MOVING_KMH = 3;
const STALE_S = 10 * 60;
const OFFLINE_S = 60 * 60;
const STATE_LABELS = {
  moving: "moving",
  parked: "parked",
  stale: "stale fix",
  offline: "offline",
  private: "private",
  theft: "theft",
};
const FINAL_COMMAND = new Set(["acknowledged", "failed", "expired", "cancelled"]);
const COMMAND_STEPS = ["queued", "sent", "acknowledged"];
const COMMANDS = {
  lock: { label: "Lock", role: "manager", text: (p) => `Lock the doors of ${p}. The box locks the central locking as soon as it gets the order.` },
  unlock: { label: "Unlock", role: "manager", text: (p) => `Unlock the doors of ${p}: anyone at the vehicle can then open it.` },
  locate: { label: "Locate", role: "manager", text: (p) => `Ask the box of ${p} for a fresh position now.` },
  disable_engine_start: {
    label: "Disable engine start",
    role: "admin",
    text: (p) => `Prevent the next engine start of ${p}. A running engine is never stopped: the vehicle drives on until it is switched off, then cannot start again.`,
  },
  enable_engine_start: { label: "Enable engine start", role: "admin", text: (p) => `Allow the engine of ${p} to start again.` },
};
const COMMAND_POLL_MS = 2000;

const $ = (id) => document.getElementById(id);

// h("li", {class: "x", dataset: {id}}, "text", child): the only way this page builds DOM.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "onclick") el.addEventListener("click", value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const state = {
  api: null,
  stream: null,
  me: null,
  config: null,
  vehicles: new Map(), // id → {vehicle, position}
  alerts: new Map(), // id → alert
  cases: new Map(), // vehicle id → open theft case
  fences: [],
  view: "fleet",
  selected: null, // vehicle id of the vehicle page
  theft: null, // the theft view's context
  commands: new Map(), // id → command, for the progress lists
  drivers: new Map(), // badge pseudonym → driver's name (GET /v1/drivers: managers and admins)
  live: false,
};

// --- time --------------------------------------------------------------------------------

const ms = (iso) => (iso ? Date.parse(iso) : null);

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function localDay(date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// --- roles and states --------------------------------------------------------------------

const can = (role) => state.me && ROLE_RANK[state.me.role] >= ROLE_RANK[role];

function theftSuspected(vehicleId) {
  if (state.cases.has(vehicleId)) return true;
  for (const alert of state.alerts.values()) {
    if (alert.vehicle_id === vehicleId && alert.type === "suspected_theft" && alert.state !== "closed") return true;
  }
  return false;
}

function vehicleState(entry) {
  if (theftSuspected(entry.vehicle.id)) return "theft";
  // Privacy mode (docs/privacy.md): the API names the vehicle but does not place it.
  if (entry.private) return "private";
  const p = entry.position;
  if (!p) return "offline";
  const age = (Date.now() - ms(p.time)) / 1000;
  if (age > OFFLINE_S) return "offline";
  if (!p.fix_valid || age > STALE_S) return "stale";
  return p.speed_kmh >= MOVING_KMH ? "moving" : "parked";
}

const plateOf = (vehicleId) => {
  const entry = state.vehicles.get(vehicleId);
  if (!entry) return vehicleId;
  return entry.vehicle.plate || entry.vehicle.label || entry.vehicle.vin;
};

// --- toast and confirmation ---------------------------------------------------------------

function toast(text, onclick) {
  const box = $("toast");
  box.replaceChildren(h("span", {}, text));
  box.onclick = onclick || null;
  box.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("shown"), 6000);
}

function showError(error) {
  toast(error instanceof ApiError ? `${error.status}: ${error.message}` : String(error));
}

// A modal that says what will happen; resolves to the note typed (or "") or null if cancelled.
function confirmDialog(title, text, { note = null, ok = "Confirm" } = {}) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  const input = $("confirm-note");
  const label = $("confirm-note-label");
  input.hidden = label.hidden = note === null;
  label.textContent = note || "";
  input.value = "";
  $("confirm-ok").textContent = ok;
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.oncancel = null;
      dialog.close();
      resolve(value);
    };
    $("confirm-ok").onclick = () => done(input.value.trim());
    $("confirm-cancel").onclick = () => done(null);
    dialog.oncancel = () => done(null);
    dialog.showModal();
    (note === null ? $("confirm-ok") : input).focus();
  });
}

// --- the map -----------------------------------------------------------------------------

let map, cluster, trackLayer, fenceLayer, drawLayer;
const markers = new Map(); // vehicle id → L.Marker

function setUpMap() {
  // A blank background shows through where tiles fail (offline): vehicles and tracks still show.
  map = L.map("map", { zoomControl: true, preferCanvas: false }).setView([48.8566, 2.3522], 11);
  L.tileLayer(state.config.tile_url, { maxZoom: 19, attribution: state.config.tile_attribution }).addTo(map);
  fenceLayer = L.layerGroup().addTo(map);
  trackLayer = L.layerGroup().addTo(map);
  drawLayer = L.layerGroup().addTo(map);
  // Clusters only where markers crowd; from zoom 16 every vehicle has its own marker.
  cluster = L.markerClusterGroup({ maxClusterRadius: 40, disableClusteringAtZoom: 16, showCoverageOnHover: false });
  cluster.addTo(map);
  map.on("click", onMapClick);
}

function markerIcon(entry) {
  const s = vehicleState(entry);
  const p = entry.position;
  const el = h("div", {
    class: `veh veh-${s}`,
    dataset: { vehicleId: entry.vehicle.id, state: s, time: p ? p.time : "" },
    title: `${plateOf(entry.vehicle.id)} — ${STATE_LABELS[s]}`,
  });
  if (p && p.speed_kmh >= MOVING_KMH) {
    const arrow = h("div", { class: "veh-arrow" });
    arrow.style.transform = `rotate(${p.heading_deg}deg)`; // CSSOM, allowed by the CSP
    el.append(arrow);
  }
  return L.divIcon({ html: el, className: "veh-icon", iconSize: [22, 22], iconAnchor: [11, 11] });
}

function drawMarker(entry) {
  const id = entry.vehicle.id;
  const p = entry.position;
  entry.drawnState = vehicleState(entry);
  let marker = markers.get(id);
  if (!p) {
    if (marker) cluster.removeLayer(marker);
    markers.delete(id);
    return;
  }
  const latlng = [p.lat, p.lon];
  if (!marker) {
    marker = L.marker(latlng, { icon: markerIcon(entry), keyboard: false });
    marker.on("click", () => openVehicle(id));
    markers.set(id, marker);
    cluster.addLayer(marker);
  } else {
    marker.setLatLng(latlng);
    marker.setIcon(markerIcon(entry));
  }
}

function fitFleet() {
  const points = [...state.vehicles.values()].filter((e) => e.position).map((e) => [e.position.lat, e.position.lon]);
  if (points.length) map.fitBounds(points, { padding: [40, 40], maxZoom: 15 });
}

// --- loading ------------------------------------------------------------------------------

async function loadFleet() {
  const [vehicles, positions, alerts, cases] = await Promise.all([
    state.api.all("/v1/vehicles"),
    state.api.get("/v1/fleet/positions"),
    state.api.get("/v1/alerts", { open: true, order: "desc", limit: 500 }),
    state.api.get("/v1/theft-cases", { status: "open", limit: 500 }),
  ]);
  state.vehicles.clear();
  for (const vehicle of vehicles) state.vehicles.set(vehicle.id, { vehicle, position: null, private: false });
  for (const row of positions.data) {
    const entry = state.vehicles.get(row.vehicle_id);
    if (entry) entry.position = row.position;
  }
  for (const vehicleId of positions.private || []) {
    const entry = state.vehicles.get(vehicleId);
    if (entry) entry.private = true;
  }
  state.alerts.clear();
  for (const alert of alerts.data) state.alerts.set(alert.id, alert);
  state.cases.clear();
  for (const c of cases.data) state.cases.set(c.vehicle_id, c);
  for (const entry of state.vehicles.values()) drawMarker(entry);
  renderVehicleList();
  renderAlerts();
  fitFleet();
  loadFences().catch(showError);
}

// --- the live stream ----------------------------------------------------------------------

function onStreamMessage(message) {
  const { kind, data, vehicle_id: vehicleId } = message;
  if (kind === "position") onPosition(vehicleId, data);
  else if (kind === "alert") onAlert(data);
  else if (kind === "command") onCommand(data);
  else if (kind === "theft_case") onTheftCase(data);
  else if (kind === "event") onEvent(vehicleId, data);
}

function onPosition(vehicleId, position) {
  const entry = state.vehicles.get(vehicleId);
  if (!entry) {
    // A vehicle created after the page loaded: fetch it once, then it is like the others.
    state.api.get(`/v1/vehicles/${vehicleId}`).then((vehicle) => {
      state.vehicles.set(vehicle.id, { vehicle, position, private: false });
      drawMarker(state.vehicles.get(vehicle.id));
      renderVehicleList();
    }).catch(() => {});
    return;
  }
  // The stream carries late (buffered) fixes too: the last position never moves back in time.
  if (entry.position && ms(position.time) <= ms(entry.position.time)) return;
  entry.position = position;
  entry.private = false; // the stream carries no private fix: a fix means privacy is over
  drawMarker(entry);
  updateVehicleRow(entry);
  if (state.view === "vehicle" && state.selected === vehicleId) onSelectedPosition(entry);
  if (state.view === "theft" && state.theft && state.theft.vehicleId === vehicleId) onTheftPosition(position);
}

function onAlert(alert) {
  const isNew = !state.alerts.has(alert.id);
  state.alerts.set(alert.id, alert);
  renderAlerts();
  refreshVehicle(alert.vehicle_id);
  if (isNew && alert.type === "suspected_theft" && alert.state === "open") {
    toast(`Suspected theft: ${plateOf(alert.vehicle_id)} — open the theft view`, () => openTheft(alert.id));
  }
  if (state.view === "theft" && state.theft && state.theft.alert && state.theft.alert.id === alert.id) {
    state.theft.alert = alert;
    renderTheftFacts();
  }
}

function onCommand(command) {
  if (!state.commands.has(command.id)) return;
  state.commands.set(command.id, command);
  renderProgress();
}

function onTheftCase(theftCase) {
  if (theftCase.status === "open") state.cases.set(theftCase.vehicle_id, theftCase);
  else state.cases.delete(theftCase.vehicle_id);
  refreshVehicle(theftCase.vehicle_id);
  if (state.view === "theft" && state.theft && state.theft.vehicleId === theftCase.vehicle_id) {
    state.theft.theftCase = theftCase;
    renderTheftFacts();
    renderTheftActions();
  }
}

function onEvent(vehicleId, event) {
  if (state.view === "theft" && state.theft && state.theft.vehicleId === vehicleId) {
    state.theft.timeline.push({ time: event.time, text: `event: ${event.type}` });
    renderTimeline();
  }
  if (state.view === "vehicle" && state.selected === vehicleId) {
    $("veh-events").prepend(eventRow(event));
  }
}

function refreshVehicle(vehicleId) {
  const entry = state.vehicles.get(vehicleId);
  if (!entry) return;
  drawMarker(entry);
  updateVehicleRow(entry);
}

function setLive(status) {
  state.live = status === "live";
  const badge = $("live");
  badge.textContent = status;
  badge.className = `live live-${status}`;
}

// --- fleet list ---------------------------------------------------------------------------

function matchesFilters(entry) {
  const q = $("search").value.trim().toLowerCase();
  const wanted = $("state-filter").value;
  const v = entry.vehicle;
  if (q && ![v.plate, v.label, v.vin].some((text) => (text || "").toLowerCase().includes(q))) return false;
  return !wanted || vehicleState(entry) === wanted;
}

function vehicleRow(entry) {
  const s = vehicleState(entry);
  const p = entry.position;
  return h(
    "li",
    { class: "item vehicle-row", dataset: { vehicleId: entry.vehicle.id, state: s }, onclick: () => openVehicle(entry.vehicle.id) },
    h("span", { class: `dot dot-${s}` }),
    h("span", { class: "name" }, plateOf(entry.vehicle.id), h("small", {}, entry.vehicle.label || "")),
    h("span", { class: "num" }, p ? `${Math.round(p.speed_kmh)} km/h` : ""),
    p ? h("span", { class: "age", dataset: { ago: p.time } }, ago(p.time)) : h("span", { class: "age" }, "no position"),
  );
}

function renderVehicleList() {
  const entries = [...state.vehicles.values()].sort((a, b) => plateOf(a.vehicle.id).localeCompare(plateOf(b.vehicle.id)));
  const shown = entries.filter(matchesFilters);
  $("vehicle-list").replaceChildren(...shown.map(vehicleRow));
  const counts = {};
  for (const entry of entries) counts[vehicleState(entry)] = (counts[vehicleState(entry)] || 0) + 1;
  const parts = Object.entries(counts).map(([s, n]) => `${n} ${STATE_LABELS[s]}`);
  $("fleet-summary").textContent = `${entries.length} vehicles: ${parts.join(", ")}`;
}

function updateVehicleRow(entry) {
  const old = $("vehicle-list").querySelector(`[data-vehicle-id="${entry.vehicle.id}"]`);
  if (!matchesFilters(entry)) {
    if (old) old.remove();
    return;
  }
  if (old) old.replaceWith(vehicleRow(entry));
  else renderVehicleList();
}

// --- views --------------------------------------------------------------------------------

function show(view) {
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  if (view !== "vehicle" && view !== "theft") trackLayer.clearLayers();
  if (view !== "fences") stopDrawing();
  if (view !== "theft") state.theft = null;
  if (view !== "vehicle") state.selected = null;
}

// --- vehicle page -------------------------------------------------------------------------

function fact(list, label, value, key) {
  list.append(h("dt", {}, label), h("dd", { dataset: key ? { fact: key } : {} }, value));
}

const yesNo = (value) => (value === null || value === undefined ? "—" : value ? "yes" : "no");

// A driver badge as stored: its pseudonym (docs/privacy.md); named when the key may see names.
function driverLabel(p) {
  if (!p) return "—";
  if (p.driver_badge === null || p.driver_badge === undefined) return "no badge";
  const name = state.drivers.get(p.driver_badge);
  return name ? `${name} (badge ${p.driver_badge})` : `badge ${p.driver_badge}`;
}

async function openVehicle(vehicleId) {
  show("vehicle");
  state.selected = vehicleId;
  const entry = state.vehicles.get(vehicleId);
  $("veh-title").textContent = plateOf(vehicleId);
  $("veh-sub").textContent = entry ? `${entry.vehicle.label || ""} ${entry.vehicle.vin}` : "";
  renderCommandButtons($("veh-commands"), vehicleId);
  $("veh-progress").hidden = true;
  if (!$("veh-day").value) $("veh-day").value = localDay();
  if (entry && entry.position) map.setView([entry.position.lat, entry.position.lon], 16);
  try {
    const [last, guard, alerts] = await Promise.all([
      state.api.get(`/v1/vehicles/${vehicleId}/position`),
      state.api.get(`/v1/vehicles/${vehicleId}/guard`),
      state.api.get("/v1/alerts", { vehicle_id: vehicleId, order: "desc", limit: 20 }),
    ]);
    if (state.selected !== vehicleId) return;
    state.vehicleExtra = { online: last.online, guard };
    if (entry && last.position && (!entry.position || ms(last.position.time) > ms(entry.position.time))) {
      entry.position = last.position;
      drawMarker(entry);
    }
    renderVehicleFacts(entry);
    $("veh-events").replaceChildren(...alerts.data.map(alertRow));
    await loadDay(vehicleId);
  } catch (error) {
    showError(error);
  }
}

function renderVehicleFacts(entry) {
  const p = entry && entry.position;
  const extra = state.vehicleExtra || {};
  const facts = $("veh-facts");
  facts.replaceChildren();
  fact(facts, "State", entry ? STATE_LABELS[vehicleState(entry)] : "—", "state");
  fact(facts, "Last fix", p ? `${clock(p.time)} (${ago(p.time)})` : "none", "time");
  fact(facts, "Last contact", p ? clock(p.received_at) : "—", "contact");
  fact(facts, "Connected", yesNo(extra.online), "online");
  fact(facts, "Position", p ? `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}` : "—", "position");
  fact(facts, "Speed", p ? `${Math.round(p.speed_kmh)} km/h, heading ${Math.round(p.heading_deg)}°` : "—", "speed");
  fact(facts, "Guard", extra.guard ? extra.guard.status : "—", "guard");
  const box = $("veh-box");
  box.replaceChildren();
  fact(box, "Ignition", p ? yesNo(p.ignition) : "—", "ignition");
  fact(box, "Driver", driverLabel(p), "driver");
  fact(box, "Doors locked", p ? yesNo(p.doors_locked) : "—", "doors_locked");
  fact(box, "Engine start inhibited", p ? yesNo(p.engine_start_inhibited) : "—", "engine_start_inhibited");
  fact(box, "Power", p ? `${p.external_power ? "vehicle" : "backup battery"}, ${(p.external_power_mv / 1000).toFixed(1)} V` : "—", "power");
  fact(box, "GSM", p ? (p.gsm_signal === 99 ? "unknown" : `${p.gsm_signal}/31`) : "—", "gsm");
  fact(box, "Warnings", p ? (p.warnings.length ? p.warnings.join(", ") : "none") : "—", "warnings");
}

function onSelectedPosition(entry) {
  renderVehicleFacts(entry);
  if ($("veh-day").value === localDay() && state.dayTrack) state.dayTrack.addLatLng([entry.position.lat, entry.position.lon]);
}

async function loadDay(vehicleId) {
  const [y, m, d] = $("veh-day").value.split("-").map(Number);
  const from = new Date(y, m - 1, d);
  const to = new Date(Math.min(new Date(y, m - 1, d + 1).getTime(), Date.now()));
  if (to <= from) return;
  const range = { from: from.toISOString(), to: to.toISOString() };
  const [track, trips, events] = await Promise.all([
    state.api.get(`/v1/vehicles/${vehicleId}/positions`, { ...range, format: "geojson", geometry: "linestring" }),
    state.api.get(`/v1/vehicles/${vehicleId}/trips`, range),
    state.api.get("/v1/events", { ...range, vehicle_id: vehicleId, limit: 200 }),
  ]);
  if (state.selected !== vehicleId) return;
  trackLayer.clearLayers();
  const coords = track.geometry ? track.geometry.coordinates.map(([lon, lat]) => [lat, lon]) : [];
  state.dayTrack = L.polyline(coords, { className: "track", weight: 4 }).addTo(trackLayer);
  for (const trip of trips.data) {
    if (trip.end.lat !== null && trip.complete) {
      L.circleMarker([trip.end.lat, trip.end.lon], { radius: 6, className: "stop" })
        .bindTooltip(`stop ${clock(trip.end.time)}`)
        .addTo(trackLayer);
    }
  }
  $("veh-day-summary").textContent = `${trips.data.length} trips, ${(trips.total_distance_m / 1000).toFixed(1)} km, ${track.properties ? track.properties.count : 0} positions`;
  $("veh-trips").replaceChildren(
    ...trips.data.map((t) =>
      h("li", { class: "item" }, `${clock(t.start.time)} → ${t.complete ? clock(t.end.time) : "…"}`, h("span", { class: "num" }, `${(t.distance_m / 1000).toFixed(1)} km, max ${Math.round(t.max_speed_kmh)} km/h`)),
    ),
  );
  const rows = events.data.slice(-50).reverse().map(eventRow);
  $("veh-events").append(...rows);
}

function eventRow(event) {
  return h("li", { class: "item event" }, h("span", { class: "chip" }, "event"), event.type, h("span", { class: "age" }, clock(event.time)));
}

// --- commands -----------------------------------------------------------------------------

function renderCommandButtons(container, vehicleId) {
  const buttons = Object.entries(COMMANDS)
    .filter(([, spec]) => can(spec.role))
    .map(([type, spec]) => h("button", { type: "button", dataset: { command: type }, onclick: () => sendCommand(vehicleId, type, $("veh-progress")) }, spec.label));
  container.replaceChildren(...buttons);
}

async function sendCommand(vehicleId, type, progress, { reason = "sent from the console", post = null } = {}) {
  const spec = COMMANDS[type];
  const answer = await confirmDialog(`${spec.label}: ${plateOf(vehicleId)}?`, spec.text(plateOf(vehicleId)), { ok: spec.label });
  if (answer === null) return null;
  try {
    const command = post ? await post() : await state.api.post(`/v1/vehicles/${vehicleId}/commands`, { type, reason });
    trackCommand(command, progress);
    return command;
  } catch (error) {
    showError(error);
    return null;
  }
}

function trackCommand(command, progress) {
  state.commands.set(command.id, command);
  state.progress = { id: command.id, el: progress };
  renderProgress();
  // The stream brings each change; while it is down, ask now and then instead.
  const poll = async () => {
    const current = state.commands.get(command.id);
    if (!current || FINAL_COMMAND.has(current.status) || !state.progress || state.progress.id !== command.id) return;
    if (!state.live) {
      try {
        state.commands.set(command.id, await state.api.get(`/v1/commands/${command.id}`));
        renderProgress();
      } catch {
        // the next round tries again
      }
    }
    setTimeout(poll, COMMAND_POLL_MS);
  };
  setTimeout(poll, COMMAND_POLL_MS);
}

function renderProgress() {
  if (!state.progress) return;
  const command = state.commands.get(state.progress.id);
  const list = state.progress.el;
  if (!command || !list) return;
  list.hidden = false;
  const status = command.status;
  // How far it got: a failed or expired command got as far as its times say.
  let reached = COMMAND_STEPS.indexOf(status);
  if (reached < 0 && status !== "pending_approval") reached = command.sent_at ? 1 : 0;
  const steps = COMMAND_STEPS.map((step, i) => h("li", { class: `step ${i <= reached ? "done" : ""}`, dataset: { step } }, step));
  const label = COMMANDS[command.type] ? COMMANDS[command.type].label : command.type;
  const head = h("li", { class: "step-head", dataset: { status } }, `${label}: ${status}${command.failure ? ` (${command.failure})` : ""}`);
  if (status === "pending_approval") steps.unshift(h("li", { class: "step done" }, "waiting for a second admin"));
  if (["failed", "expired", "cancelled"].includes(status)) steps.push(h("li", { class: "step failed" }, status));
  list.dataset.status = status;
  list.dataset.commandId = command.id;
  list.replaceChildren(head, ...steps);
}

// --- alerts -------------------------------------------------------------------------------

function alertRow(alert) {
  const actions = [];
  if (alert.type === "suspected_theft") {
    actions.push(h("button", { type: "button", class: "danger", dataset: { action: "theft" }, onclick: (e) => { e.stopPropagation(); openTheft(alert.id); } }, "Theft view"));
  }
  if (alert.state === "open" && can("manager")) {
    actions.push(h("button", { type: "button", dataset: { action: "ack" }, onclick: (e) => { e.stopPropagation(); ackAlert(alert); } }, "Acknowledge"));
  }
  return h(
    "li",
    { class: `item alert sev-${alert.severity}`, dataset: { alertId: alert.id, type: alert.type, state: alert.state } },
    h("span", { class: `chip sev-${alert.severity}` }, alert.severity),
    h("span", { class: "name" }, `${alert.type.replaceAll("_", " ")} — ${plateOf(alert.vehicle_id)}`, h("small", {}, alert.detail || ""), alert.ack_note ? h("small", {}, `note: ${alert.ack_note}`) : null),
    h("span", { class: "age" }, `${alert.state}, `, h("span", { dataset: { ago: alert.last_seen_at } }, ago(alert.last_seen_at)), alert.count > 1 ? ` ×${alert.count}` : ""),
    h("span", { class: "actions" }, actions),
  );
}

function renderAlerts() {
  const openOnly = $("alerts-open").checked;
  const alerts = [...state.alerts.values()]
    .filter((a) => !openOnly || a.state !== "closed")
    .sort((a, b) => ms(b.last_seen_at) - ms(a.last_seen_at));
  $("alert-list").replaceChildren(...alerts.map(alertRow));
  const open = [...state.alerts.values()].filter((a) => a.state === "open").length;
  $("alert-count").textContent = open ? String(open) : "";
}

async function ackAlert(alert) {
  const note = await confirmDialog(`Acknowledge: ${alert.type.replaceAll("_", " ")}`, `${plateOf(alert.vehicle_id)}: ${alert.detail || ""}. Say what you did about it.`, { note: "Note (kept with the alert)", ok: "Acknowledge" });
  if (note === null) return;
  try {
    onAlert(await state.api.post(`/v1/alerts/${alert.id}/ack`, note ? { note } : {}));
  } catch (error) {
    showError(error);
  }
}

// --- theft view ---------------------------------------------------------------------------

// The theft view of a suspected_theft alert; `caseId` when the caller just opened its case.
async function openTheft(alertId, caseId = null) {
  let alert = state.alerts.get(alertId);
  try {
    alert = await state.api.get(`/v1/alerts/${alertId}`);
    state.alerts.set(alert.id, alert);
  } catch (error) {
    showError(error);
    if (!alert) return;
  }
  show("theft");
  const ctx = { alert, vehicleId: alert.vehicle_id, theftCase: null, since: alert.first_seen_at, trail: null, last: null, timeline: [] };
  state.theft = ctx;
  $("theft-title").textContent = `Suspected theft: ${plateOf(ctx.vehicleId)}`;
  $("theft-sub").textContent = alert.detail || "";
  $("theft-progress").hidden = true;
  trackLayer.clearLayers();
  ctx.trail = L.polyline([], { className: "trail", weight: 5 }).addTo(trackLayer);
  try {
    let positions;
    let events;
    if (caseId || alert.theft_case_id) {
      const detail = await state.api.get(`/v1/theft-cases/${caseId || alert.theft_case_id}`);
      ctx.theftCase = detail;
      ctx.since = detail.started_at;
      positions = detail.positions;
      events = detail.events;
      for (const c of detail.commands) ctx.timeline.push({ time: c.created_at, text: `command ${c.type}: ${c.status}` });
      for (const line of detail.audit) ctx.timeline.push({ time: line.time, text: `${line.action} by ${line.actor}${line.reason ? `: ${line.reason}` : ""}` });
    } else {
      const page = await state.api.get(`/v1/vehicles/${ctx.vehicleId}/positions`, { from: ctx.since, limit: 10000 });
      positions = page.data;
      events = (await state.api.get("/v1/events", { vehicle_id: ctx.vehicleId, from: ctx.since, limit: 500 })).data;
    }
    if (state.theft !== ctx) return;
    ctx.timeline.push({ time: alert.first_seen_at, text: `suspected theft raised: ${alert.detail || ""}` });
    for (const e of events) ctx.timeline.push({ time: e.time, text: `event: ${e.type}` });
    for (const p of positions) ctx.trail.addLatLng([p.lat, p.lon]);
    const entry = state.vehicles.get(ctx.vehicleId);
    ctx.last = positions.length ? positions[positions.length - 1] : entry && entry.position;
    if (entry && ctx.last && (!entry.position || ms(ctx.last.time) > ms(entry.position.time))) entry.position = ctx.last;
    ctx.points = positions.length;
    // Zoom 16: no clustering, the followed vehicle always has a marker of its own.
    if (ctx.last) map.setView([ctx.last.lat, ctx.last.lon], 16);
    renderTheftFacts();
    renderTheftActions();
    renderTimeline();
  } catch (error) {
    showError(error);
  }
}

function onTheftPosition(position) {
  const ctx = state.theft;
  if (ctx.last && ms(position.time) <= ms(ctx.last.time)) return;
  ctx.last = position;
  ctx.points = (ctx.points || 0) + 1;
  ctx.trail.addLatLng([position.lat, position.lon]);
  map.panTo([position.lat, position.lon], { animate: false }); // follow the vehicle
  renderTheftFacts();
}

function compass(deg) {
  return ["N", "NE", "E", "SE", "S", "SW", "W", "NW"][Math.round(deg / 45) % 8];
}

function renderTheftFacts() {
  const ctx = state.theft;
  if (!ctx) return;
  const p = ctx.last;
  const facts = $("theft-facts");
  facts.replaceChildren();
  $("view-theft").dataset.points = String(ctx.points || 0);
  fact(facts, "Since", clock(ctx.since), "since");
  fact(facts, "Speed", p ? `${Math.round(p.speed_kmh)} km/h` : "—", "speed");
  fact(facts, "Heading", p ? `${Math.round(p.heading_deg)}° ${compass(p.heading_deg)}` : "—", "heading");
  fact(facts, "Last fix", p ? clock(p.time) : "—", "time");
  fact(facts, "Fix age", p ? h("span", { dataset: { ago: p.time } }, ago(p.time)) : "—", "age");
  fact(facts, "Position", p ? `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}` : "—", "position");
  fact(facts, "Ignition", p ? yesNo(p.ignition) : "—", "ignition");
  fact(facts, "Driver", driverLabel(p), "driver");
  fact(facts, "Engine start", p ? (p.engine_start_inhibited ? "inhibited (immobilised)" : "allowed") : "—", "immobilised");
  fact(facts, "Case", ctx.theftCase ? `${ctx.theftCase.status} since ${clock(ctx.theftCase.opened_at)}` : "no theft case", "case");
  fact(facts, "Alert", ctx.alert ? `${ctx.alert.state}${ctx.alert.ack_note ? ` — ${ctx.alert.ack_note}` : ""}` : "—", "alert");
}

function renderTheftActions() {
  const ctx = state.theft;
  const buttons = [];
  if (can("admin") && !ctx.theftCase) {
    buttons.push(h("button", { type: "button", dataset: { action: "open-case" }, onclick: openCase }, "Open theft case"));
  }
  if (can("admin")) {
    buttons.push(h("button", { type: "button", class: "danger", dataset: { action: "immobilise" }, onclick: immobilise }, "Request immobilisation"));
  }
  if (can("manager") && ctx.alert && ctx.alert.state === "open") {
    buttons.push(h("button", { type: "button", dataset: { action: "ack" }, onclick: () => ackAlert(ctx.alert) }, "Acknowledge"));
  }
  $("theft-actions").replaceChildren(...buttons);
}

async function openCase() {
  const ctx = state.theft;
  const note = await confirmDialog("Open a theft case?", `The box of ${plateOf(ctx.vehicleId)} switches to fast reporting and its data is kept under legal hold.`, { note: "Note (police reference, ...)", ok: "Open case" });
  if (note === null) return;
  try {
    const opened = await state.api.post(`/v1/alerts/${ctx.alert.id}/theft`, note ? { note } : {});
    await openTheft(ctx.alert.id, opened.id);
  } catch (error) {
    showError(error);
  }
}

async function immobilise() {
  const ctx = state.theft;
  const reason = "requested from the theft view";
  const post = ctx.theftCase
    ? async () => (await state.api.post(`/v1/theft-cases/${ctx.theftCase.id}/immobilise`, { reason })).command
    : null;
  const command = await sendCommand(ctx.vehicleId, "disable_engine_start", $("theft-progress"), { reason, post });
  if (command) {
    ctx.timeline.push({ time: command.created_at, text: `command disable_engine_start: ${command.status}` });
    renderTimeline();
  }
}

function renderTimeline() {
  const ctx = state.theft;
  if (!ctx) return;
  const rows = [...ctx.timeline].sort((a, b) => ms(b.time) - ms(a.time)).map((line) => h("li", { class: "item" }, h("span", { class: "age" }, clock(line.time)), line.text));
  $("theft-timeline").replaceChildren(...rows);
}

async function exportTrack(format) {
  const ctx = state.theft;
  if (!ctx) return;
  const path = ctx.theftCase ? `/v1/theft-cases/${ctx.theftCase.id}/track` : `/v1/vehicles/${ctx.vehicleId}/positions`;
  const params = ctx.theftCase ? { format } : { format, from: ctx.since };
  try {
    const response = await state.api.request(path, { params, accept: "*/*", raw: true });
    const url = URL.createObjectURL(await response.blob());
    const ext = format === "geojson" ? "geojson" : format;
    const link = h("a", { href: url, download: `theft-${plateOf(ctx.vehicleId)}.${ext}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error);
  }
}

// --- geofences ----------------------------------------------------------------------------

const MAX_POLYGON_POINTS = 50;
let drawing = null; // {kind: "circle" | "polygon", points: [[lat, lon]]}

async function loadFences() {
  state.fences = await state.api.all("/v1/geofences");
  renderFences();
}

function fenceShape(fence) {
  const g = fence.geometry;
  if (g.type === "Point") return L.circle([g.coordinates[1], g.coordinates[0]], { radius: fence.radius_m, className: "fence" });
  const rings = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
  return L.polygon(rings.map((poly) => poly.map((ring) => ring.map(([lon, lat]) => [lat, lon]))), { className: "fence" });
}

function renderFences() {
  fenceLayer.clearLayers();
  for (const fence of state.fences) fenceShape(fence).bindTooltip(fence.name).addTo(fenceLayer);
  $("fence-list").replaceChildren(
    ...state.fences.map((fence) =>
      h(
        "li",
        { class: "item", dataset: { fenceId: fence.id } },
        h("span", { class: "name" }, fence.name, h("small", {}, fence.geometry.type === "Point" ? `circle ${Math.round(fence.radius_m)} m` : fence.geometry.type.toLowerCase())),
        can("manager") ? h("button", { type: "button", class: "link", onclick: () => deleteFence(fence) }, "Delete") : null,
      ),
    ),
  );
  const tools = [];
  if (can("manager")) {
    tools.push(h("button", { type: "button", onclick: () => startDrawing("circle") }, "New circle"));
    tools.push(h("button", { type: "button", onclick: () => startDrawing("polygon") }, "New polygon"));
    if (drawing && drawing.kind === "polygon") tools.push(h("button", { type: "button", onclick: finishPolygon }, "Finish"));
    if (drawing) tools.push(h("button", { type: "button", class: "link", onclick: stopDrawing }, "Cancel"));
  }
  $("fence-tools").replaceChildren(...tools);
}

function startDrawing(kind) {
  drawing = { kind, points: [] };
  drawLayer.clearLayers();
  // Clicks go through the vehicles' markers to the map while drawing: a depot's fence is drawn
  // where its vehicles stand (app.css, .map.drawing).
  $("map").classList.add("drawing");
  $("fence-hint").textContent = kind === "circle" ? "Click the centre on the map, then a point on the edge." : "Click the corners on the map, then Finish.";
  renderFences();
}

function stopDrawing() {
  drawing = null;
  $("map").classList.remove("drawing");
  if (drawLayer) drawLayer.clearLayers();
  $("fence-hint").textContent = "";
  if (fenceLayer) renderFences();
}

function onMapClick(event) {
  if (!drawing) return;
  const point = [event.latlng.lat, event.latlng.lng];
  drawing.points.push(point);
  drawLayer.clearLayers();
  if (drawing.kind === "circle") {
    if (drawing.points.length === 2) {
      const radius = map.distance(drawing.points[0], drawing.points[1]);
      saveFence({ type: "Point", coordinates: [drawing.points[0][1], drawing.points[0][0]] }, Math.max(radius, 10));
      return;
    }
    L.circleMarker(point, { radius: 4, className: "draw" }).addTo(drawLayer);
  } else {
    L.polygon(drawing.points, { className: "draw" }).addTo(drawLayer);
    if (drawing.points.length >= MAX_POLYGON_POINTS) finishPolygon();
  }
}

function finishPolygon() {
  if (!drawing || drawing.points.length < 3) {
    toast("A polygon needs at least three corners.");
    return;
  }
  const ring = drawing.points.map(([lat, lon]) => [lon, lat]);
  ring.push(ring[0]);
  saveFence({ type: "Polygon", coordinates: [ring] }, null);
}

async function saveFence(geometry, radius) {
  const name = await confirmDialog("New geofence", "Alerts follow the fleet's geofence rules for every vehicle.", { note: "Name", ok: "Create" });
  stopDrawing();
  if (!name) return;
  try {
    const body = { name, geometry };
    if (radius !== null) body.radius_m = Math.round(radius);
    state.fences.push(await state.api.post("/v1/geofences", body));
    renderFences();
  } catch (error) {
    showError(error);
  }
}

async function deleteFence(fence) {
  if ((await confirmDialog(`Delete ${fence.name}?`, "Its crossings stay listed.", { ok: "Delete" })) === null) return;
  try {
    await state.api.del(`/v1/geofences/${fence.id}`);
    state.fences = state.fences.filter((f) => f.id !== fence.id);
    renderFences();
  } catch (error) {
    showError(error);
  }
}

// --- sign-in ------------------------------------------------------------------------------

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  if (state.stream) state.stream.stop();
  location.hash = "";
  // A fresh page: no state of the previous key survives.
  if (message) sessionStorage.setItem("gp8.console.message", message);
  location.reload();
}

async function signIn(key) {
  const api = new Api(key, null);
  const me = await api.get("/v1/me");
  if (!me.fleet_id) throw new ApiError(403, "an operator key manages fleets and keys; the console needs a key of a fleet");
  sessionStorage.setItem(KEY_STORAGE, key);
  return { api, me };
}

async function start(key) {
  const { api, me } = await signIn(key);
  api.onUnauthorized = () => signOut("The key is no longer valid.");
  state.api = api;
  state.me = me;
  $("signin").hidden = true;
  $("app").hidden = false;
  document.body.dataset.role = me.role;
  $("who").textContent = `${me.name || me.prefix} · ${me.role}`;
  state.config = await (await fetch("/console/config.json", { cache: "no-store" })).json();
  if (can("manager")) {
    const drivers = await api.get("/v1/drivers");
    state.drivers = new Map(drivers.data.map((d) => [d.badge, d.name]));
  }
  setUpMap();
  show("fleet");
  state.stream = new Stream(key, {
    onMessage: onStreamMessage,
    onStatus: setLive,
    onExpired: () => loadFleet().catch(showError),
    onUnauthorized: () => signOut("The key is no longer valid."),
  });
  // Stream first, then the snapshot: anything stored in between arrives by the stream, and a
  // position older than the one shown is ignored (onPosition).
  state.stream.start();
  await loadFleet();
  setInterval(tick, 5000);
}

// Ages and states drift with time alone: refresh them in place, without refetching anything
// and without rebuilding rows (a button being clicked must stay where it is).
function tick() {
  for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(el.dataset.ago);
  for (const entry of state.vehicles.values()) {
    if (entry.drawnState !== vehicleState(entry)) {
      drawMarker(entry);
      updateVehicleRow(entry);
    }
  }
}

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await start($("signin-key").value.trim());
    } catch (error) {
      $("signin-error").textContent = error instanceof ApiError && error.status === 401 ? "This key is not valid." : error.message;
    }
  });
  $("signout").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      show(tab.dataset.view);
      if (tab.dataset.view === "fleet") renderVehicleList();
      if (tab.dataset.view === "alerts") renderAlerts();
      if (tab.dataset.view === "fences") renderFences();
    });
  }
  for (const back of document.querySelectorAll("[data-back]")) back.addEventListener("click", () => show(back.dataset.back));
  $("search").addEventListener("input", renderVehicleList);
  $("state-filter").addEventListener("change", renderVehicleList);
  $("alerts-open").addEventListener("change", renderAlerts);
  $("veh-day").addEventListener("change", () => {
    if (!state.selected) return;
    $("veh-events").replaceChildren();
    loadDay(state.selected).catch(showError);
  });
  for (const button of document.querySelectorAll("[data-export]")) button.addEventListener("click", () => exportTrack(button.dataset.export));
}

wire();
const message = sessionStorage.getItem("gp8.console.message");
sessionStorage.removeItem("gp8.console.message");
const saved = sessionStorage.getItem(KEY_STORAGE);
if (saved) {
  start(saved).catch(() => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("signin").hidden = false;
  });
} else {
  $("signin").hidden = false;
  if (message) $("signin-error").textContent = message;
}
