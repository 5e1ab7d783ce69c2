// Pilegate station dashboard. Hand-written, no build step, nothing fetched from elsewhere.
// The server pushes a snapshot per channel, then only what changed (Server-Sent Events); the page
// keeps each channel's state, re-renders from it, and reconnects (with a fresh ticket) whenever the
// stream drops. Actions go through the REST APIs with the logged-in token.
"use strict";

const TEXT = {
  en: {
    title: "Charging station", conn_connecting: "connecting", conn_live: "live", conn_reconnecting: "reconnecting",
    username: "username", password: "password", login: "Log in", logout: "Log out", operator: "operator", driver: "driver",
    board: "Charging points", tariff_now: "Tariff now", waiting_area: "Waiting area", line_fast: "Fast waiting line",
    line_slow: "Slow waiting line", my_request: "My request", no_request: "No request yet.", queue_number: "Queue number",
    status: "Status", mode: "Mode", position: "Position", wait: "Estimated wait", pile: "Pile", charged: "Charged",
    cost_so_far: "Cost so far", cancel: "Cancel", end_charging: "End charging", new_request: "Request a charge",
    change_request: "Change my request", fast: "fast", slow: "slow", amount_kwh: "Amount (kWh)", battery_kwh: "Battery (kWh)",
    submit: "Submit", change: "Change", my_bills: "My bills", bill: "Bill", start: "Start", minutes: "Minutes",
    peak: "Peak", normal: "Normal", valley: "Valley", service: "Service", total: "Total", my_notes: "My notifications",
    today: "Today", sessions: "sessions", revenue: "Revenue", power_chart: "Power, last hour (kW)", ports: "Piles and ports",
    port: "Port", online: "Online", state: "State", session_kwh: "Session kWh", fault: "Fault", queues: "Queues at the piles",
    health: "Health", cars: "Cars", actions: "Actions", fault_group: "Fault group", parameters: "Prices, periods and queues",
    peak_rate: "Peak rate", normal_rate: "Normal rate", valley_rate: "Valley rate", service_rate: "Service rate",
    peak_periods: "Peak periods", normal_periods: "Normal periods", valley_periods: "Valley periods",
    area_size: "Waiting area size", queue_len: "Queue per pile", fault_strategy: "Fault strategy", dispatch_policy: "Dispatch",
    save: "Save", faults: "Recent faults", notifications: "Recent notifications", station: "station",
    footer: "Live updates by Server-Sent Events · times in the station's zone",
    st_normal: "working", st_fault: "fault", st_offline: "out of service", st_waiting: "waiting", st_charging: "charging",
    st_completed: "completed", st_cancelled: "cancelled", st_idle: "idle", st_faulted: "faulted", st_comm_fault: "no contact",
    st_available: "available", st_plugged: "plugged in", st_finished: "finished", st_unavailable: "unavailable",
    h_online: "online", h_faulted: "faulted", h_comm_fault: "no contact", h_offline: "offline",
    take_out: "Out of service", put_back: "Back in service", inject_fault: "Declare fault", clear_fault: "Clear fault",
    min: "min", none: "none", empty: "empty", no_pile: "no working pile", saved: "Saved", ahead: "ahead",
    per_kwh: "/kWh + service", disabled: "out of service", now: "now",
  },
  zh: {
    title: "充电站", conn_connecting: "连接中", conn_live: "实时", conn_reconnecting: "重新连接中",
    username: "用户名", password: "密码", login: "登录", logout: "退出", operator: "管理员", driver: "用户",
    board: "充电桩", tariff_now: "当前电价", waiting_area: "等候区", line_fast: "快充排队", line_slow: "慢充排队",
    my_request: "我的充电请求", no_request: "暂无充电请求。", queue_number: "排队号", status: "状态", mode: "模式",
    position: "排队位置", wait: "预计等待", pile: "充电桩", charged: "已充电量", cost_so_far: "当前费用", cancel: "取消",
    end_charging: "结束充电", new_request: "提交充电请求", change_request: "修改充电请求", fast: "快充", slow: "慢充",
    amount_kwh: "充电量 (kWh)", battery_kwh: "电池容量 (kWh)", submit: "提交", change: "修改", my_bills: "我的详单",
    bill: "详单", start: "开始", minutes: "分钟", peak: "峰时", normal: "平时", valley: "谷时", service: "服务费",
    total: "总计", my_notes: "我的通知", today: "今日", sessions: "次充电", revenue: "收入",
    power_chart: "功率 (最近一小时, kW)", ports: "充电桩与端口", port: "端口", online: "在线", state: "状态",
    session_kwh: "本次电量 kWh", fault: "故障", queues: "各桩排队", health: "连接", cars: "车辆", actions: "操作",
    fault_group: "故障队列", parameters: "电价、时段与排队参数", peak_rate: "峰时电价", normal_rate: "平时电价",
    valley_rate: "谷时电价", service_rate: "服务费单价", peak_periods: "峰时时段", normal_periods: "平时时段",
    valley_periods: "谷时时段", area_size: "等候区车位", queue_len: "每桩队列长度", fault_strategy: "故障调度",
    dispatch_policy: "调度策略", save: "保存", faults: "最近故障", notifications: "最近通知", station: "全站",
    footer: "实时数据由服务器推送 · 时间为充电站当地时间",
    st_normal: "正常", st_fault: "故障", st_offline: "停用", st_waiting: "等候中", st_charging: "充电中",
    st_completed: "已完成", st_cancelled: "已取消", st_idle: "空闲", st_faulted: "故障", st_comm_fault: "通信中断",
    st_available: "空闲", st_plugged: "已插枪", st_finished: "已充满", st_unavailable: "不可用",
    h_online: "在线", h_faulted: "故障", h_comm_fault: "通信中断", h_offline: "离线",
    take_out: "停用", put_back: "启用", inject_fault: "标记故障", clear_fault: "故障恢复",
    min: "分钟", none: "无", empty: "无", no_pile: "无可用充电桩", saved: "已保存", ahead: "前方",
    per_kwh: "/kWh + 服务费", disabled: "停用", now: "现在",
  },
};
const PALETTE = ["#0b7a75", "#d98e04", "#5b5fc7", "#d64545", "#1f9d55", "#8e44ad", "#2d7dd2", "#b5651d"];

const app = {
  lang: localStorage.getItem("lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en"),
  token: sessionStorage.getItem("token"),
  username: sessionStorage.getItem("username"),
  staff: sessionStorage.getItem("staff") === "1",
  channels: {},
  chart: { step_s: 10, points: [] },
  source: null,
  retryMs: 1000,
  retryTimer: null,
  lastRequest: "",
};

const $ = (sel) => document.querySelector(sel);
const t = (key) => (TEXT[app.lang] && TEXT[app.lang][key]) || TEXT.en[key] || key;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function fill(parent, nodes) {
  parent.replaceChildren(...nodes);
}

function num(value, places = 2) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(places);
}

function clock(iso) {
  if (!iso) return "—";
  const m = /T(\d\d:\d\d)/.exec(iso);
  return m ? `${iso.slice(5, 10)} ${m[1]}` : iso;
}

function minutes(value) {
  if (value === null || value === undefined) return "—";
  if (value < 0) return t("no_pile");
  return `${Math.round(value)} ${t("min")}`;
}

// ---- messages ---------------------------------------------------------------------------------

let flashTimer = null;
function flash(message, good = false) {
  const box = $("#flash");
  box.textContent = message;
  box.classList.toggle("good", good);
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

// ---- REST -------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (app.token) headers.Authorization = `Token ${app.token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok || data.success === false) {
    const error = new Error(data.message || data.title || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data.data;
}

async function act(fn, good) {
  try {
    await fn();
    if (good) flash(good, true);
  } catch (error) {
    flash(error.message);
  }
}

// ---- the live stream --------------------------------------------------------------------------

function setConn(state) {
  const conn = $("#conn");
  conn.dataset.state = state;
  conn.textContent = t(`conn_${state}`);
}

async function connect() {
  clearTimeout(app.retryTimer);
  if (app.source) app.source.close();
  app.source = null;
  let url = "/dashboard/stream";
  if (app.token) {
    let grant;
    try {
      const response = await fetch("/dashboard/ticket", {
        method: "POST",
        headers: { Authorization: `Token ${app.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ view: app.staff ? "operator" : "driver" }),
      });
      // 401: the sign-in ended; 403: the account lost its staff role. Either way, sign in again.
      if (response.status === 401 || response.status === 403) { logout(false); return; }
      if (!response.ok) throw new Error(`ticket ${response.status}`);
      grant = (await response.json()).data;
    } catch (error) {
      retry();
      return;
    }
    url += `?ticket=${encodeURIComponent(grant.ticket)}`;
  }
  const source = new EventSource(url);
  app.source = source;
  source.addEventListener("snapshot", (e) => {
    const msg = JSON.parse(e.data);
    app.channels[msg.ch] = msg.state;
    if (msg.chart) app.chart = msg.chart;
    app.retryMs = 1000;
    setConn("live");
    render();
  });
  source.addEventListener("change", (e) => {
    const msg = JSON.parse(e.data);
    const state = app.channels[msg.ch] || (app.channels[msg.ch] = {});
    Object.assign(state, msg.set);
    for (const key of msg.del) delete state[key];
    render();
  });
  source.addEventListener("chart", (e) => {
    app.chart.points.push(JSON.parse(e.data));
    if (app.chart.points.length > 360) app.chart.points.shift();
    drawChart();
  });
  source.addEventListener("ended", () => {
    // the token behind this stream no longer holds: a new ticket tells the page what to do
    source.close();
    if (app.source === source) connect();
  });
  source.onerror = () => {
    if (app.source !== source) return;
    source.close();
    app.source = null;
    retry();
  };
}

function retry() {
  setConn("reconnecting");
  clearTimeout(app.retryTimer);
  app.retryTimer = setTimeout(connect, app.retryMs);
  app.retryMs = Math.min(app.retryMs * 2, 5000);
}

// ---- rendering ----------------------------------------------------------------------------------

function board() {
  return app.channels.operator || app.channels.public || {};
}

function render() {
  renderBoard(board());
  if (app.channels.operator) renderOperator(app.channels.operator);
  const mine = Object.keys(app.channels).find((ch) => ch.startsWith("driver:"));
  if (mine) renderDriver(app.channels[mine].request);
}

function renderBoard(s) {
  const points = Object.keys(s).filter((k) => k.startsWith("point:")).map((k) => s[k]);
  fill($("#points"), points.map((p) => el("div", { class: "point", id: `point-${p.id}`, "data-status": p.status },
    el("div", {}, el("span", { class: "name", text: p.id }), el("span", { class: "kind", text: t(p.mode) })),
    el("div", { class: "st", text: p.working ? t("st_charging") : t(`st_${p.status}`) }),
    el("div", { class: "nums" }, ...p.queue.map((no, i) => el("span", { class: i === 0 && p.working ? "num on" : "num", text: no }))))));
  for (const mode of ["fast", "slow"]) {
    const line = s[`line:${mode}`] || [];
    fill($(`#line-${mode}`), line.length ? line.map(([no, wait]) => el("li", {}, el("b", { text: no }), el("span", { class: "w", text: minutes(wait) })))
      : [el("li", { class: "empty", text: t("empty") })]);
  }
  if (s.area) $("#area").textContent = `${s.area.current} / ${s.area.max}`;
  if (s.tariff) {
    $("#tariff-period").textContent = t(s.tariff.period);
    $("#tariff-period").dataset.period = s.tariff.period;
    $("#tariff-rate").textContent = `¥${num(s.tariff.rate)} ${t("per_kwh")} ¥${num(s.tariff.service)}`;
  }
}

function carText(car) {
  return `${car.no} · ${car.user || "?"} · ${num(car.charged)}/${num(car.kwh)} kWh`;
}

function renderOperator(s) {
  const stats = s.stats;
  if (stats) {
    $("#stats-date").textContent = stats.date;
    for (const key of ["sessions", "kwh", "peak", "normal", "valley", "service", "total"]) {
      $(`#stat-${key}`).textContent = key === "sessions" ? stats[key] : num(stats[key]);
    }
  }
  const ports = Object.keys(s).filter((k) => k.startsWith("port:")).map((k) => s[k]);
  fill($("#ports tbody"), ports.map((p) => el("tr", { id: `port-${p.pile}-${p.port}` },
    el("td", { text: `${p.pile}-${p.port}` }),
    el("td", {}, el("span", { class: p.online ? "dot on" : "dot", title: p.online ? t("online") : t("h_offline") })),
    el("td", { class: `state state-${p.state}`, "data-state": p.state, text: t(`st_${p.state}`) }),
    el("td", { class: "kw", text: num(p.kw) }), el("td", { text: num(p.v, 1) }), el("td", { text: num(p.a, 1) }),
    el("td", { class: "session", text: num(p.session_kwh) }), el("td", { text: num(p.temp, 1) }),
    el("td", { class: p.fault === "none" ? "" : "fault-on", text: p.fault === "none" ? "—" : p.fault }))));
  const points = Object.keys(s).filter((k) => k.startsWith("point:")).map((k) => s[k]);
  fill($("#pile-queues tbody"), points.map((p) => el("tr", { id: `queue-${p.id}`, "data-status": p.status },
    el("td", { text: p.id }),
    el("td", { text: t(`h_${p.health}`) }),
    el("td", { class: "status", text: p.disabled ? t("disabled") : t(`st_${p.status}`) }),
    el("td", { class: "cars", text: p.cars.length ? p.cars.map(carText).join(" | ") : "—" }),
    el("td", { class: "actions" },
      el("button", { class: p.disabled ? "small on" : "small off danger", type: "button",
        text: p.disabled ? t("put_back") : t("take_out"), onclick: () => pileAction(p.pile, p.disabled ? "on" : "off") }),
      " ",
      el("button", { class: p.faulted ? "small recover" : "small fault ghost", type: "button",
        text: p.faulted ? t("clear_fault") : t("inject_fault"), onclick: () => pileAction(p.pile, p.faulted ? "recover" : "fault") })))));
  for (const [id, key] of [["#waiting", "waiting"], ["#faultgroup", "faultgroup"]]) {
    const cars = [...(s[`${key}:fast`] || []), ...(s[`${key}:slow`] || [])];
    fill($(id), cars.length ? cars.map((c) => el("li", {}, el("b", { text: c.no }), ` ${c.user || "?"} · ${num(c.kwh)} kWh`,
      el("span", { class: "w", text: ` · ${minutes(c.wait)}` }))) : [el("li", { class: "empty", text: t("empty") })]);
  }
  fill($("#faults"), (s.faults || []).length ? s.faults.map((f) => el("li", {},
    el("time", { text: clock(f.at) }), el("b", { text: f.where }), ` ${f.what}`))
    : [el("li", { class: "empty", text: t("none") })]);
  fill($("#notes"), (s.notes || []).length ? s.notes.map((n) => el("li", {},
    el("time", { text: clock(n.at) }), el("b", { text: n.user || "" }), ` ${n.text}`))
    : [el("li", { class: "empty", text: t("none") })]);
  drawChart();
}

async function pileAction(pile, verb) {
  await act(() => api("POST", `/api/charging/admin/piles/${encodeURIComponent(pile)}/${verb}/`), `${pile}: ${t("saved")}`);
}

function renderDriver(r) {
  const active = r && (r.status === "waiting" || r.status === "charging");
  $("#req-none").hidden = !!r;
  $("#req").hidden = !r;
  $("#req-cancel").hidden = !active;
  $("#req-end").hidden = !(r && r.status === "charging");
  $("#submit-btn").hidden = !!active;
  $("#change-btn").hidden = !(r && r.status === "waiting");
  $("#battery-field").hidden = !!active;
  $("#request-panel").hidden = !!(r && r.status === "charging");
  $("#form-title").textContent = active ? t("change_request") : t("new_request");
  if (r) {
    $("#req-no").textContent = r.no;
    const status = $("#req-status");
    status.dataset.status = r.status;
    status.textContent = t(`st_${r.status}`);
    $("#req-mode").textContent = t(r.mode);
    $("#req-position").textContent = r.status === "waiting" ? `${r.position} (${r.ahead} ${t("ahead")})` : "—";
    $("#req-wait").textContent = r.status === "waiting" ? minutes(r.wait) : "—";
    $("#req-pile").textContent = r.pile || "—";
    $("#req-charged").textContent = num(r.charged);
    $("#req-kwh").textContent = num(r.kwh);
    $("#req-cost").textContent = r.cost === undefined ? "—" : `≈ ¥${num(r.cost)}`;
  }
  const signature = r ? `${r.id}:${r.status}:${r.pile}` : "";
  if (signature !== app.lastRequest) {
    app.lastRequest = signature;
    if (active) {
      $("#submit-mode").value = r.mode;  // the change form starts from the request as it is
      $("#submit-kwh").value = r.kwh;
    }
    loadDriverLists();
  }
}

async function loadDriverLists() {
  try {
    const [bills, notes] = await Promise.all([api("GET", "/api/charging/bills/?limit=20"), api("GET", "/api/charging/notifications/?limit=20")]);
    fill($("#bills tbody"), bills.bills.map((b) => el("tr", { "data-bill": b.bill_id },
      el("td", { text: b.bill_id.slice(0, 8) }), el("td", { text: b.pile_id }), el("td", { text: clock(b.start_time) }),
      el("td", { class: "kwh", text: num(b.charging_amount) }), el("td", { text: num(b.charging_duration, 1) }),
      el("td", { text: num(b.peak_cost) }), el("td", { text: num(b.normal_cost) }), el("td", { text: num(b.valley_cost) }),
      el("td", { text: num(b.service_cost) }), el("td", { class: "total", text: num(b.total_cost) }))));
    fill($("#my-notes"), notes.length ? notes.map((n) => el("li", {}, el("time", { text: clock(n.timestamp) }), n.message))
      : [el("li", { class: "empty", text: t("none") })]);
  } catch (error) {
    flash(error.message);
  }
}

// ---- the power chart (canvas) -------------------------------------------------------------------

function drawChart() {
  const canvas = $("#chart");
  if (!canvas || $("#operator").hidden) return;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (!width) return;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const points = [...app.chart.points];
  const live = livePower();
  if (live) points.push([Date.now(), live]);
  const piles = [...new Set(points.flatMap(([, p]) => Object.keys(p)))].sort();
  const series = [{ name: t("station"), color: "#12263a", width: 2.5, values: points.map(([ms, p]) => [ms, Object.values(p).reduce((a, b) => a + b, 0)]) }];
  piles.forEach((pile, i) => series.push({ name: pile, color: PALETTE[i % PALETTE.length], width: 1.5, values: points.map(([ms, p]) => [ms, p[pile] || 0]) }));
  const now = points.length ? Math.max(Date.now(), points[points.length - 1][0]) : Date.now();
  // the last hour, or less while the page has less history (at least five minutes)
  const span = Math.min(3600e3, Math.max(300e3, points.length ? now - points[0][0] : 0));
  const from = now - span;
  const top = Math.max(1, ...series[0].values.map(([, v]) => v)) * 1.15;
  const left = 40, bottom = 20, plotW = width - left - 12, plotH = height - bottom - 8;
  const x = (ms) => left + ((ms - from) / (now - from)) * plotW;
  const y = (v) => 8 + plotH - (v / top) * plotH;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7785";
  ctx.strokeStyle = "#e3e8ee";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(width - 12, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(0), 4, y(v) + 4);
  }
  for (let i = 0; i <= 4; i++) {
    const ago = Math.round((span * (4 - i)) / 4 / 60000);
    const label = ago ? `-${ago} min` : t("now");
    ctx.fillText(label, Math.min(x(now - (span * (4 - i)) / 4) - (i ? 18 : 0), width - 30), height - 5);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width;
    ctx.beginPath();
    s.values.filter(([ms]) => ms >= from).forEach(([ms, v], i) => (i ? ctx.lineTo(x(ms), y(v)) : ctx.moveTo(x(ms), y(v))));
    ctx.stroke();
  }
  fill($("#legend"), series.map((s) => el("span", {}, colorMark(s.color), `${s.name} ${num(s.values.length ? s.values[s.values.length - 1][1] : 0, 1)} kW`)));
}

function livePower() {
  // the newest readings, so the chart's right edge is now rather than the last sample
  const s = app.channels.operator;
  if (!s) return null;
  const power = {};
  for (const key of Object.keys(s)) {
    if (!key.startsWith("port:")) continue;
    const p = s[key];
    power[p.pile] = (power[p.pile] || 0) + (p.online ? p.kw : 0);
  }
  return power;
}

function colorMark(color) {
  const mark = el("i");
  mark.style.background = color;  // CSSOM, allowed by the page's style-src policy
  return mark;
}

// ---- forms and session --------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const username = $("#login-user").value.trim();
  const password = $("#login-pass").value;
  try {
    const data = await api("POST", "/api/auth/login/", { username, password });
    app.token = data.token;
    app.username = data.username;
    app.staff = !!data.is_staff;
    sessionStorage.setItem("token", app.token);
    sessionStorage.setItem("username", app.username);
    sessionStorage.setItem("staff", app.staff ? "1" : "0");
    $("#login-pass").value = "";
    enterView();
  } catch (error) {
    flash(error.message);
  }
}

function logout(callServer = true) {
  if (callServer && app.token) api("POST", "/api/auth/logout/").catch(() => {});
  app.token = null;
  app.username = null;
  app.staff = false;
  sessionStorage.clear();
  enterView();
}

function enterView() {
  const loggedIn = !!app.token;
  $("#login-form").hidden = loggedIn;
  $("#who").hidden = !loggedIn;
  $("#who-name").textContent = app.username || "";
  $("#who-role").textContent = app.staff ? t("operator") : t("driver");
  $("#operator").hidden = !(loggedIn && app.staff);
  $("#driver").hidden = !(loggedIn && !app.staff);
  document.body.dataset.view = loggedIn ? (app.staff ? "operator" : "driver") : "public";
  app.channels = {};
  app.chart = { step_s: 10, points: [] };
  app.lastRequest = null;
  if (loggedIn && app.staff) loadParameters();
  connect();
}

function requestBody(withBattery) {
  const body = { charging_mode: $("#submit-mode").value, requested_amount: Number($("#submit-kwh").value) };
  const battery = $("#submit-battery").value;
  if (withBattery && battery) body.battery_capacity = Number(battery);
  return body;
}

function currentRequest() {
  const mine = Object.keys(app.channels).find((ch) => ch.startsWith("driver:"));
  return mine ? app.channels[mine].request : null;
}

async function loadParameters() {
  try {
    const p = await api("GET", "/api/charging/config/parameters/");
    const form = $("#params-form");
    for (const key of ["peak_rate", "normal_rate", "valley_rate", "service_rate"]) form.elements[key].value = p.pricing[key];
    for (const key of ["peak", "normal", "valley"]) form.elements[key].value = p.time_periods[key].join(", ");
    for (const key of ["WaitingAreaSize", "ChargingQueueLen", "fault_strategy", "dispatch_policy"]) form.elements[key].value = p[key];
  } catch (error) {
    flash(error.message);
  }
}

async function saveParameters(event) {
  event.preventDefault();
  const f = event.target.elements;
  const ranges = (text) => text.split(/[,\s]+/).filter(Boolean);
  const body = {
    pricing: Object.fromEntries(["peak_rate", "normal_rate", "valley_rate", "service_rate"].map((k) => [k, Number(f[k].value)])),
    time_periods: { peak: ranges(f.peak.value), normal: ranges(f.normal.value), valley: ranges(f.valley.value) },
    WaitingAreaSize: Number(f.WaitingAreaSize.value),
    ChargingQueueLen: Number(f.ChargingQueueLen.value),
    fault_strategy: f.fault_strategy.value,
    dispatch_policy: f.dispatch_policy.value,
  };
  await act(async () => { await api("PUT", "/api/charging/config/parameters/", body); await loadParameters(); }, t("saved"));
}

function applyLanguage() {
  document.documentElement.lang = app.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  for (const node of document.querySelectorAll("[data-tp]")) node.placeholder = t(node.dataset.tp);
  $("#lang").textContent = app.lang === "zh" ? "English" : "中文";
  setConn($("#conn").dataset.state);
  $("#who-role").textContent = app.staff ? t("operator") : t("driver");
  render();
  const r = currentRequest();
  if (r) renderDriver(r);
}

function start() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout(true));
  $("#lang").addEventListener("click", () => {
    app.lang = app.lang === "zh" ? "en" : "zh";
    localStorage.setItem("lang", app.lang);
    applyLanguage();
  });
  $("#submit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api("POST", "/api/charging/request/", requestBody(true)));
  });
  $("#change-btn").addEventListener("click", () => {
    const r = currentRequest();
    if (r) act(() => api("PUT", `/api/charging/request/${encodeURIComponent(r.id)}/`, requestBody(false)));
  });
  $("#req-cancel").addEventListener("click", () => {
    const r = currentRequest();
    if (r) act(() => api("DELETE", `/api/charging/request/${encodeURIComponent(r.id)}/cancel/`));
  });
  $("#req-end").addEventListener("click", () => act(() => api("POST", "/api/charging/complete/")));
  $("#params-form").addEventListener("submit", saveParameters);
  window.addEventListener("resize", drawChart);
  applyLanguage();
  enterView();
}

document.addEventListener("DOMContentLoaded", start);
