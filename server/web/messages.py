"""The dashboard's one message catalogue: every string a page or script shows, in zh-CN and English.

Pages call :func:`t` with a key; scripts get the keys they need as JSON in the page. A unit test
checks that every key has both languages and that every key the pages and scripts use exists.
"""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "app.title": {"zh-CN": "Custody 执法记录监督", "en": "Custody supervision"},
    "lang.switch": {"zh-CN": "English", "en": "中文"},
    "nav.fleet": {"zh-CN": "设备", "en": "Fleet"},
    "nav.cases": {"zh-CN": "案件", "en": "Cases"},
    "nav.audit": {"zh-CN": "审计", "en": "Audit"},
    "nav.access": {"zh-CN": "调阅记录", "en": "Access log"},
    "nav.signout": {"zh-CN": "退出", "en": "Sign out"},
    "signin.title": {"zh-CN": "登录", "en": "Sign in"},
    "signin.token": {"zh-CN": "API 令牌", "en": "API token"},
    "signin.submit": {"zh-CN": "登录", "en": "Sign in"},
    "signin.failed": {"zh-CN": "令牌无效：{reason}", "en": "The token was not accepted: {reason}"},
    "signin.as": {"zh-CN": "当前用户 {name}（{role}）", "en": "Signed in as {name} ({role})"},
    "home.none": {"zh-CN": "您的角色在此没有可用页面。", "en": "Your role has no pages here."},
    "fleet.title": {"zh-CN": "设备状态", "en": "Fleet"},
    "fleet.summary": {"zh-CN": "共 {devices} 台，在线 {online} 台，录制中 {recording} 台，待上传 {pending} 段",
                      "en": "{devices} devices, {online} online, {recording} recording, {pending} chunks pending"},
    "fleet.none": {"zh-CN": "尚无设备。", "en": "No devices yet."},
    "col.device": {"zh-CN": "设备", "en": "Device"},
    "col.serial": {"zh-CN": "序列号", "en": "Serial"},
    "col.online": {"zh-CN": "在线", "en": "Online"},
    "col.recording": {"zh-CN": "录制", "en": "Recording"},
    "col.battery": {"zh-CN": "电量", "en": "Battery"},
    "col.storage": {"zh-CN": "剩余存储", "en": "Storage free"},
    "col.pending": {"zh-CN": "待上传", "en": "Pending uploads"},
    "col.skew": {"zh-CN": "时钟偏差", "en": "Clock skew"},
    "col.checkpoint": {"zh-CN": "最新检查点", "en": "Last checkpoint"},
    "col.last_seen": {"zh-CN": "最后通信", "en": "Last seen"},
    "col.state": {"zh-CN": "状态", "en": "State"},
    "col.seq": {"zh-CN": "序号", "en": "Seq"},
    "col.kind": {"zh-CN": "类型", "en": "Kind"},
    "col.time": {"zh-CN": "时间", "en": "Time"},
    "col.duration": {"zh-CN": "时长", "en": "Duration"},
    "col.recording_id": {"zh-CN": "录像", "en": "Recording"},
    "col.chunks": {"zh-CN": "分段数", "en": "Chunks"},
    "col.actor": {"zh-CN": "调阅人", "en": "Who"},
    "col.reason": {"zh-CN": "事由", "en": "Reason"},
    "col.objects": {"zh-CN": "对象数", "en": "Objects"},
    "col.start": {"zh-CN": "开始", "en": "Start"},
    "col.end": {"zh-CN": "结束", "en": "End"},
    "col.code": {"zh-CN": "问题代码", "en": "Code"},
    "col.severity": {"zh-CN": "严重程度", "en": "Severity"},
    "col.message": {"zh-CN": "说明", "en": "Message"},
    "col.opened": {"zh-CN": "发现时间", "en": "Opened"},
    "col.closed": {"zh-CN": "关闭时间", "en": "Closed"},
    "col.number": {"zh-CN": "案件编号", "en": "Number"},
    "col.title": {"zh-CN": "标题", "en": "Title"},
    "col.category": {"zh-CN": "类别", "en": "Category"},
    "col.handler": {"zh-CN": "承办人", "en": "Handler"},
    "col.step": {"zh-CN": "环节", "en": "Step"},
    "col.requirement": {"zh-CN": "记录要求", "en": "Requirement"},
    "col.window": {"zh-CN": "时间窗口", "en": "Window"},
    "col.coverage": {"zh-CN": "覆盖率", "en": "Coverage"},
    "col.gaps": {"zh-CN": "缺口", "en": "Gaps"},
    "yes": {"zh-CN": "是", "en": "yes"},
    "no": {"zh-CN": "否", "en": "no"},
    "unknown": {"zh-CN": "未知", "en": "unknown"},
    "online": {"zh-CN": "在线", "en": "online"},
    "offline": {"zh-CN": "离线", "en": "offline"},
    "state.idle": {"zh-CN": "待机", "en": "idle"},
    "state.armed": {"zh-CN": "预录", "en": "armed"},
    "state.recording": {"zh-CN": "录制中", "en": "recording"},
    "device.title": {"zh-CN": "设备 {id}", "en": "Device {id}"},
    "device.live": {"zh-CN": "实时调阅", "en": "Live view"},
    "device.recordings": {"zh-CN": "录像", "en": "Recordings"},
    "device.entries": {"zh-CN": "最近条目", "en": "Recent entries"},
    "device.play": {"zh-CN": "回放", "en": "Play"},
    "device.no_recordings": {"zh-CN": "暂无已验证的录像。", "en": "No verified recordings yet."},
    "live.title": {"zh-CN": "实时调阅：{id}", "en": "Live view: {id}"},
    "live.reason": {"zh-CN": "调阅事由", "en": "Reason for this view"},
    "live.start": {"zh-CN": "开始调阅", "en": "Start live view"},
    "live.leave": {"zh-CN": "结束调阅", "en": "Leave"},
    "live.requesting": {"zh-CN": "正在请求设备…", "en": "Asking the device…"},
    "live.connecting": {"zh-CN": "正在连接…", "en": "Connecting…"},
    "live.playing": {"zh-CN": "直播中（已记录调阅 #{access}）", "en": "Live (access #{access} on record)"},
    "live.ended": {"zh-CN": "调阅已结束", "en": "View ended"},
    "live.failed": {"zh-CN": "失败：{reason}", "en": "Failed: {reason}"},
    "live.frames": {"zh-CN": "已解码帧数", "en": "Frames decoded"},
    "live.notice": {"zh-CN": "每次调阅均记入调阅记录，包括开始和结束时间。",
                    "en": "Every view is recorded in the access log with its start and end."},
    "play.title": {"zh-CN": "录像回放：{id}", "en": "Playback: {id}"},
    "play.reason": {"zh-CN": "回放事由", "en": "Reason for viewing"},
    "play.start": {"zh-CN": "开始回放", "en": "Play"},
    "play.access": {"zh-CN": "回放中（已记录调阅 #{access}）", "en": "Playing (access #{access} on record)"},
    "play.done": {"zh-CN": "回放完毕（调阅 #{access}）", "en": "Finished (access #{access})"},
    "play.failed": {"zh-CN": "失败：{reason}", "en": "Failed: {reason}"},
    "cases.title": {"zh-CN": "案件", "en": "Cases"},
    "cases.none": {"zh-CN": "暂无案件。", "en": "No cases yet."},
    "case.title": {"zh-CN": "案件 {number}", "en": "Case {number}"},
    "case.timeline": {"zh-CN": "记录覆盖时间线", "en": "Coverage timeline"},
    "case.legend": {"zh-CN": "灰色：环节时间窗口；绿色：已录制；红色：缺口",
                    "en": "grey: step window; green: recorded; red: gap"},
    "audit.title": {"zh-CN": "审计发现", "en": "Audit findings"},
    "audit.filter": {"zh-CN": "筛选", "en": "Filter"},
    "audit.open_only": {"zh-CN": "仅未关闭", "en": "Open only"},
    "audit.csv": {"zh-CN": "下载 CSV", "en": "Download CSV"},
    "audit.none": {"zh-CN": "没有符合条件的发现。", "en": "No findings match."},
    "access.title": {"zh-CN": "调阅记录", "en": "Access log"},
    "access.live": {"zh-CN": "实时调阅（开始与结束）", "en": "Live views (start and end)"},
    "access.events": {"zh-CN": "调阅事件", "en": "Access events"},
    "access.none": {"zh-CN": "暂无记录。", "en": "Nothing on record."},
    "access.ongoing": {"zh-CN": "进行中", "en": "ongoing"},
    "kind.view": {"zh-CN": "回放", "en": "view"},
    "kind.live_view": {"zh-CN": "实时调阅", "en": "live view"},
    "kind.download": {"zh-CN": "下载", "en": "download"},
    "kind.export": {"zh-CN": "导出", "en": "export"},
    "kind.integrity": {"zh-CN": "完整性检查", "en": "integrity check"},
    "kind.chunk": {"zh-CN": "分段", "en": "chunk"},
    "kind.event": {"zh-CN": "事件", "en": "event"},
    "error.title": {"zh-CN": "出错了", "en": "Something went wrong"},
    "error.forbidden": {"zh-CN": "您的角色无权查看此页面。", "en": "Your role may not see this page."},
    "error.not_found": {"zh-CN": "未找到。", "en": "Not found."},
}


def t(lang: str, key: str, **values: object) -> str:
    """The message ``key`` in ``lang`` (English when a language lacks it), with ``{name}`` filled in."""
    entry = MESSAGES[key]
    text = entry.get(lang) or entry["en"]
    return text.format(**values) if values else text


def pick_language(cookie: str | None, accept: str | None, default: str) -> str:
    """The language cookie, else the browser's first supported language, else the configured default."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return default
