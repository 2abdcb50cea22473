// Texts of the console in English and Chinese. Elements carry data-i18n="key"; the
// language is the user's choice (localStorage), else the gateway's (site.language).
"use strict";
const TEXTS = {
  title: ["Gateway console", "网关控制台"],
  login: ["Log in", "登录"],
  logout: ["Log out", "退出"],
  user: ["User", "用户名"],
  password: ["Password", "密码"],
  login_failed: ["Login failed", "登录失败"],
  tab_alarms: ["Alarms", "告警"],
  tab_devices: ["Devices", "设备"],
  tab_health: ["Gateway health", "网关状态"],
  tab_check: ["Config check", "配置检查"],
  tab_oos: ["Out of service", "停用规则"],
  tab_audit: ["Audit log", "审计日志"],
  device_pattern: ["Device (* = all, b1-* = a pattern)", "设备（* 为全部，可用 b1-* 等通配）"],
  take_out_of_service: ["Take out of service", "停用（退出服务）"],
  return_to_service: ["Return to service", "恢复服务"],
  in_config: ["in the config file", "在配置文件中停用"],
  reason: ["Why", "原因"],
  "reason.out_of_service": ["out of service", "已停用"],
  "reason.schedule": ["suppressed by its schedule", "按作息表抑制"],
  by: ["By", "操作人"],
  origin: ["From", "来源"],
  all_in_service: ["Every rule is in service", "所有规则均在服务中"],
  out_of_view_now: ["Not annunciated now:", "当前不通报："],
  when: ["When", "时间"],
  action: ["Action", "操作"],
  alarm: ["Alarm", "告警"],
  note: ["Note", "备注"],
  no_change: ["no change", "未改变"],
  history: ["History", "记录"],
  oos_short: ["Out of service…", "停用…"],
  audit_of: ["Entries of alarm", "告警的记录："],
  audit_newest: ["Newest first", "最新的在前"],
  audit_all: ["Show all", "显示全部"],
  shelved_until: ["until", "至"],
  already_acked: ["Already acknowledged by", "已被确认，确认人："],
  already_shelved: ["Already shelved until", "已搁置至"],
  already_finished: ["This alarm has ended meanwhile; acknowledged by", "该告警已结束，确认人："],
  changed_nothing: ["Nothing to change", "无需改变"],
  severity: ["Severity", "级别"],
  state: ["State", "状态"],
  device: ["Device", "设备"],
  rule: ["Rule", "规则"],
  message: ["Message", "内容"],
  value: ["Value", "数值"],
  raised_at: ["Raised", "发生时间"],
  acked_by: ["Acknowledged by", "确认人"],
  actions: ["Actions", "操作"],
  ack: ["Acknowledge", "确认"],
  shelve: ["Shelve", "搁置"],
  shelve_minutes: ["Shelve for (minutes)", "搁置时长（分钟）"],
  no_alarms: ["No active alarms", "当前没有告警"],
  live: ["live", "实时"],
  reconnecting: ["reconnecting…", "正在重连…"],
  name: ["Name", "名称"],
  kind: ["Kind", "类型"],
  location: ["Location", "位置"],
  since: ["Since", "自"],
  last_error: ["Last error", "最近错误"],
  values: ["Last values", "最新数值"],
  frames: ["Last raw frames", "最近原始报文"],
  no_frames: ["(this driver keeps none)", "（该驱动不保存）"],
  diagnostics: ["Diagnostics", "诊断信息"],
  outbox_depth: ["Outbox depth (messages)", "缓存消息数"],
  outbox_bytes: ["Outbox size (bytes)", "缓存大小（字节）"],
  outbox_oldest: ["Oldest message age (s)", "最早消息等待（秒）"],
  outbox_mode: ["Outbox mode", "缓存模式"],
  dropped: ["Messages dropped by the size cap", "因容量上限丢弃的消息"],
  publish_rate: ["Published per second", "每秒发布"],
  uplink: ["Uplink", "上行连接"],
  connected: ["connected", "已连接"],
  disconnected: ["disconnected", "未连接"],
  mqtt_version: ["MQTT version", "MQTT 版本"],
  broker: ["Broker", "代理服务器"],
  clock: ["Clock", "时钟"],
  synced: ["synchronised", "已同步"],
  not_synced: ["not synchronised", "未同步"],
  uptime: ["Uptime (s)", "运行时长（秒）"],
  devices_online: ["Devices online / total", "在线设备 / 总数"],
  run_check: ["Check the config file now", "立即检查配置文件"],
  check_ok: ["The config file is valid", "配置文件正确"],
  check_bad: ["The config file has problems", "配置文件有错误"],
  file: ["File", "文件"],
  checked_at: ["Checked at", "检查时间"],
  language: ["Language", "语言"],
  "state.active_unacked": ["active, unacknowledged", "未确认"],
  "state.active_acked": ["active, acknowledged", "已确认"],
  "state.cleared_unacked": ["cleared, unacknowledged", "已恢复未确认"],
  "state.cleared": ["cleared", "已恢复"],
  "state.shelved": ["shelved", "已搁置"],
  "action.raised": ["raised", "告警产生"],
  "action.cleared": ["cleared", "条件恢复"],
  "action.ack": ["acknowledged", "确认"],
  "action.shelve": ["shelved", "搁置"],
  "action.shelve_expired": ["shelve ended", "搁置到期"],
  "action.out_of_service": ["taken out of service", "停用"],
  "action.in_service": ["returned to service", "恢复服务"],
  "action.suppressed": ["suppressed by schedule", "按作息表抑制"],
  "action.unsuppressed": ["schedule over", "抑制结束"],
  "action.hidden": ["left view", "移出视图"],
  "severity.critical": ["critical", "紧急"],
  "severity.major": ["major", "重要"],
  "severity.minor": ["minor", "次要"],
  "severity.warning": ["warning", "提示"],
  "dev.online": ["online", "在线"],
  "dev.offline": ["offline", "离线"],
  "dev.degraded": ["degraded", "降级"],
  "dev.null": ["unknown", "未知"],
};

function currentLang() {
  const chosen = localStorage.getItem("console.lang");
  if (chosen === "en" || chosen === "zh") return chosen;
  return document.documentElement.dataset.defaultLang === "en" ? "en" : "zh";
}

function t(key) {
  const pair = TEXTS[key];
  // a state or severity this page does not know yet: its own name, without the prefix
  if (!pair) return key.includes(".") ? key.slice(key.indexOf(".") + 1) : key;
  return currentLang() === "zh" ? pair[1] : pair[0];
}

function applyTexts(root) {
  document.documentElement.lang = currentLang() === "zh" ? "zh-CN" : "en";
  for (const el of (root || document).querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  document.title = t("title");
}

function setupLanguage(defaultLang, onChange) {
  document.documentElement.dataset.defaultLang = defaultLang;
  const select = document.getElementById("lang");
  select.value = currentLang();
  select.addEventListener("change", () => {
    localStorage.setItem("console.lang", select.value);
    applyTexts();
    if (onChange) onChange();
  });
  applyTexts();
}
