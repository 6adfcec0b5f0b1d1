// The live topology page: asks GET {api}/topology every second with the token
// from sessionStorage and redraws the SVG. Plain DOM, no framework, no build.
// Every name goes in as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "ovs-fabric-token";
const REFRESH_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const COLUMN = 220;
const HOST_TOP = 50;
const HOST_HEIGHT = 78;
const NET_TOP = HOST_TOP + HOST_HEIGHT + 40;
const PORT_STEP = 30;
const LB_WIDTH = 250;

const api = document.body.dataset.api;
let timer = null;

function el(name, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function statusClass(ok) {
  return ok === true ? "up" : ok === false ? "down" : "unknown";
}

function short(id) {
  return id ? id.slice(0, 8) : "";
}

// Columns: the hosts an admin sees, or for a tenant (who sees no hosts) the
// hosts its ports are bound to, by id; then "unbound".
function columnsOf(topo) {
  const columns = topo.hosts.map((h) => ({ id: h.id, label: h.name, host: h }));
  const known = new Set(columns.map((c) => c.id));
  for (const port of topo.ports) {
    const hostId = port.binding.host_id;
    if (hostId && !known.has(hostId)) {
      known.add(hostId);
      columns.push({ id: hostId, label: "host " + short(hostId), host: null });
    }
  }
  if (topo.ports.some((p) => !p.binding.host_id)) {
    columns.push({ id: null, label: "unbound", host: null });
  }
  return columns;
}

function drawHosts(svg, columns) {
  const centers = new Map();
  columns.forEach((column, index) => {
    const x = 20 + index * COLUMN;
    centers.set(column.id, x + (COLUMN - 20) / 2);
    const g = el("g", { class: "host", "data-id": column.id || "unbound", "data-name": column.label }, svg);
    el("rect", { x, y: HOST_TOP, width: COLUMN - 20, height: HOST_HEIGHT, rx: 6 }, g);
    el("text", { x: x + 10, y: HOST_TOP + 18, class: "title" }, g, column.label);
    const host = column.host;
    if (host) {
      g.setAttribute("data-ovsdb", String(host.ovsdb_connected));
      g.setAttribute("data-openflow", String(host.openflow_connected));
      el("circle", { cx: x + 14, cy: HOST_TOP + 34, r: 5, class: statusClass(host.ovsdb_connected) }, g);
      el("text", { x: x + 23, y: HOST_TOP + 38 }, g, "OVSDB");
      el("circle", { cx: x + 84, cy: HOST_TOP + 34, r: 5, class: statusClass(host.openflow_connected) }, g);
      el("text", { x: x + 93, y: HOST_TOP + 38 }, g, "OpenFlow");
      g.setAttribute("data-flows", String(host.flow_count ?? ""));
      if (host.flow_count != null) {
        const flows = `${host.flow_count} flows, ${host.group_count ?? 0} groups`;
        el("text", { x: x + 10, y: HOST_TOP + 54, class: "small" }, g, flows);
      }
      const links = [host.tunnel_ip && "vtep " + host.tunnel_ip, host.uplink && "trunk " + host.uplink];
      el("text", { x: x + 10, y: HOST_TOP + 68, class: "small" }, g, links.filter(Boolean).join(" · "));
      if (host.last_error) el("title", {}, g, host.last_error);
    }
  });
  return centers;
}

// VXLAN: every pair of hosts with a tunnel address (a full mesh), drawn as arcs
// above the hosts. VLAN: one trunk joining every host with an uplink.
function drawLinks(svg, columns, centers) {
  const vteps = columns.filter((c) => c.host && c.host.tunnel_ip);
  for (let i = 0; i < vteps.length; i++) {
    for (let j = i + 1; j < vteps.length; j++) {
      const a = centers.get(vteps[i].id);
      const b = centers.get(vteps[j].id);
      const lift = Math.min(HOST_TOP - 8, 12 + (b - a) / 12);
      el("path", {
        d: `M ${a} ${HOST_TOP} Q ${(a + b) / 2} ${HOST_TOP - lift * 2} ${b} ${HOST_TOP}`,
        class: "tunnel",
        "data-a": vteps[i].label,
        "data-b": vteps[j].label,
      }, svg);
    }
  }
  const trunked = columns.filter((c) => c.host && c.host.uplink).map((c) => centers.get(c.id));
  if (trunked.length > 1) {
    const y = HOST_TOP + HOST_HEIGHT + 18;
    el("line", { x1: Math.min(...trunked), x2: Math.max(...trunked), y1: y, y2: y, class: "trunk" }, svg);
    for (const x of trunked) {
      el("line", { x1: x, x2: x, y1: HOST_TOP + HOST_HEIGHT, y2: y, class: "trunk" }, svg);
    }
  }
}

function drawNetworks(svg, topo, columns, centers) {
  const tenants = new Map(topo.tenants.map((t) => [t.id, t.name]));
  const width = columns.length * COLUMN + LB_WIDTH;
  const portPositions = new Map();
  let y = NET_TOP;
  for (const net of topo.networks) {
    const ports = topo.ports.filter((p) => p.network_id === net.id);
    const lbs = topo.load_balancers.filter((lb) => lb.network_id === net.id);
    const perColumn = new Map();
    for (const port of ports) {
      const key = port.binding.host_id || null;
      perColumn.set(key, (perColumn.get(key) || 0) + 1);
    }
    const lbRows = lbs.reduce((n, lb) => n + 1 + lb.backends.length, 0);
    const rows = Math.max(1, ...perColumn.values(), Math.ceil(lbRows * 0.6));
    const height = 34 + rows * PORT_STEP;
    const g = el("g", { class: "network", "data-id": net.id, "data-name": net.name }, svg);
    el("rect", { x: 10, y, width: width - 10, height, rx: 6 }, g);
    const links = el("g", { class: "links" }, g); // under the ports and their labels
    const tenant = tenants.get(net.tenant_id) || short(net.tenant_id);
    const segment = net.type === "vlan" ? "VLAN " + net.segmentation_id : "VNI " + net.segmentation_id;
    el("text", { x: 20, y: y + 16, class: "title" }, g, `${tenant} / ${net.name}`);
    el("text", { x: 20 + 8 * (tenant.length + net.name.length + 4), y: y + 16, class: "small" }, g,
      [segment, net.cidr].filter(Boolean).join(" · "));
    const used = new Map();
    for (const port of ports) {
      const key = port.binding.host_id || null;
      const slot = used.get(key) || 0;
      used.set(key, slot + 1);
      const cx = (centers.get(key) ?? 20) - (COLUMN - 20) / 2 + 18;
      const cy = y + 34 + slot * PORT_STEP;
      const pg = el("g", {
        class: "port", "data-id": port.id, "data-name": port.name || "", "data-status": port.status,
      }, g);
      el("circle", { cx, cy, r: 7, class: port.status === "ACTIVE" ? "up" : "down" }, pg);
      const label = `${port.name || short(port.id)} ${port.ips.join(",")}`;
      el("text", { x: cx + 12, y: cy + 4 }, pg, label);
      el("text", { x: cx + 12, y: cy + 15, class: "small" }, pg, port.status);
      portPositions.set(port.id, pg);
    }
    let ly = y + 10;
    const lx = columns.length * COLUMN + 10;
    for (const lb of lbs) {
      const lg = el("g", { class: "lb", "data-id": lb.id, "data-name": lb.name }, g);
      const boxHeight = 24 + lb.backends.length * 16;
      el("rect", { x: lx, y: ly, width: LB_WIDTH - 30, height: boxHeight, rx: 4 }, lg);
      el("text", { x: lx + 8, y: ly + 16, class: "title" }, lg, `${lb.name} ${lb.vip}:${lb.port}/${lb.protocol}`);
      lb.backends.forEach((backend, i) => {
        const by = ly + 32 + i * 16;
        const health = backend.health;
        const bg = el("g", {
          class: "backend", "data-ip": backend.ip, "data-port": backend.port, "data-health": health,
        }, lg);
        const ok = health === "healthy" ? true : health === "unhealthy" ? false : null;
        el("circle", { cx: lx + 14, cy: by - 4, r: 5, class: statusClass(ok) }, bg);
        el("text", { x: lx + 24, y: by }, bg, `${backend.ip}:${backend.port} w${backend.weight} ${health}`);
        const target = backend.port_id && portPositions.get(backend.port_id);
        if (target) {
          // From the LB to the end of the backend port's label.
          const box = target.getBBox();
          const end = [box.x + box.width + 4, box.y + 9];
          el("line", { x1: lx, y1: by - 4, x2: end[0], y2: end[1], class: "backend " + health }, links);
        }
      });
      ly += boxHeight + 8;
    }
    y += Math.max(height, ly - y) + 12;
  }
  return { width, height: y + 10 };
}

function draw(topo) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const columns = columnsOf(topo);
  const centers = drawHosts(svg, columns);
  drawLinks(svg, columns, centers);
  const size = drawNetworks(svg, topo, columns, centers);
  svg.setAttribute("width", Math.max(size.width + 10, 600));
  svg.setAttribute("height", Math.max(size.height, NET_TOP + 40));
  svg.setAttribute("data-revision", String(topo.revision));
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function showLogin(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("view").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  setStatus("signed out");
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin();
  try {
    const answer = await fetch(`${api}/topology`, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
    });
    if (answer.status === 401 || answer.status === 403) {
      const problem = await answer.json().catch(() => ({}));
      return showLogin(problem.detail || "the token was refused");
    }
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const topo = await answer.json();
    draw(topo);
    document.getElementById("login").hidden = true;
    document.getElementById("view").hidden = false;
    document.getElementById("signout").hidden = false;
    const active = topo.ports.filter((p) => p.status === "ACTIVE").length;
    setStatus(`revision ${topo.revision} · ${topo.networks.length} networks · `
      + `${active}/${topo.ports.length} ports ACTIVE · updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus(`cannot reach the service (${error.message}); retrying`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  clearTimeout(timer);
  refresh();
});
document.getElementById("signout").addEventListener("click", () => showLogin());
refresh();
