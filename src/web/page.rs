//! `/`: one self-contained HTML page — the fleet table of `pihealth status`,
//! the open alarms, and per host small charts of CPU, memory and disk use
//! over the last hours, drawn as inline SVG. No scripts, no external
//! assets: it works from a phone on the LAN and under a strict CSP.
//!
//! Every string that comes from an agent or a file (host names, messages,
//! errors) goes through `esc` before it reaches the page.

use std::fmt::Write as _;

use chrono::{DateTime, Local, TimeZone};

use crate::human::human_bytes;
use crate::master::registry::{AgentRecord, State};
use crate::master::silences::Silence;
use crate::protocol::message::SKEW_LIMIT_MS;
use crate::web::alarm_summary::{time_of, AlarmSummary};
use crate::web::samples::Window;

/// Open alarms listed on the page; the rest are counted.
const ALARMS_SHOWN: usize = 10;
/// The chart windows offered as links.
const WINDOWS: [u32; 4] = [1, 6, 24, 48];

/// One chart's data: a title, a colour and `(unix seconds, percent)` points.
pub(crate) struct Chart {
    pub(crate) title: &'static str,
    pub(crate) color: &'static str,
    pub(crate) points: Vec<(i64, f64)>,
}

/// One host's charts.
pub(crate) struct HostCharts {
    pub(crate) host: String,
    pub(crate) charts: Vec<Chart>,
}

pub(crate) struct Page<'a> {
    pub(crate) master: &'a str,
    pub(crate) agents: &'a [AgentRecord],
    pub(crate) alarms: &'a AlarmSummary,
    /// Silences not yet expired (`crate::master::silences`).
    pub(crate) silences: &'a [Silence],
    pub(crate) now_ms: i64,
    pub(crate) hours: u32,
    /// The window drawn: the last `hours`, or less when `zoomed`.
    pub(crate) window: Window,
    /// Less history exists than `hours`: the charts span what there is.
    pub(crate) zoomed: bool,
    pub(crate) hosts: Vec<HostCharts>,
}

/// HTML-escape text for element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    super::escape_chars(text, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        c if c.is_control() => Some(" "),
        _ => None,
    })
}

fn local(secs: i64) -> Option<DateTime<Local>> {
    Local.timestamp_opt(secs, 0).single()
}

fn full_time(ms: i64) -> String {
    local(ms.div_euclid(1000))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_default()
}

fn ago(now_ms: i64, ms: i64) -> String {
    crate::human::ago((now_ms - ms) / 1000, true)
}

/// "12s ago" with the exact time on hover; "–" when unknown.
fn ago_cell(now_ms: i64, ms: Option<i64>) -> String {
    match ms {
        None => "<span class=\"dim\">–</span>".into(),
        Some(t) => format!("<span title=\"{}\">{}</span>", full_time(t), ago(now_ms, t)),
    }
}

fn state_badge(state: State) -> String {
    let class = match state {
        State::Up => "up",
        State::Down => "down",
        State::NeverSeen => "never",
    };
    format!("<span class=\"badge {class}\">{}</span>", state.as_str())
}

fn level_badge(level: &str) -> String {
    let class = match level {
        "warning" | "critical" | "unknown" | "note" | "normal" => level,
        _ => "unknown",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(level))
}

pub(crate) fn render(p: &Page) -> String {
    let mut out = String::with_capacity(64 * 1024);
    head(&mut out, p);
    tiles(&mut out, p);
    fleet(&mut out, p);
    open_alarms(&mut out, p);
    silences(&mut out, p);
    charts(&mut out, p);
    let _ = writeln!(
        out,
        "<footer>pihealth {} · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/api/status.json\">/api/status.json</a> · this page refreshes every 10 s</footer>\
         </main></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    out
}

const STYLE: &str = "\
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2530;--dim:#667085;--line:#e3e6ea;\
--up:#1a7f37;--down:#cf222e;--never:#8c959f;--note:#0969da;--warning:#bf6a02;\
--critical:#cf222e;--unknown:#8250df;--normal:#1a7f37}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--ink);\
font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}\
header{background:#1d2530;color:#fff;padding:14px 32px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}\
header h1{margin:0;font-size:19px;font-weight:650;letter-spacing:.3px}\
header .meta{color:#c3cad3;font-size:13px}\
main{max-width:1360px;margin:0 auto;padding:20px 32px 32px}\
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:14px;margin-bottom:18px}\
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px}\
.tile .n{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums}\
.tile .l{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.6px}\
.tile.bad .n{color:var(--down)}.tile.good .n{color:var(--up)}\
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:18px;overflow:hidden}\
section>h2{font-size:15px;margin:0;padding:11px 16px;border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;align-items:center;gap:4px 10px}\
section>h2 .sub{color:var(--dim);font-weight:400;font-size:13px}\
section>h2 .right{margin-left:auto;font-weight:400;font-size:13px}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:8px 12px;border-bottom:1px solid var(--line);white-space:nowrap}\
th{font-size:11.5px;color:var(--dim);font-weight:600;text-transform:uppercase;letter-spacing:.5px;background:#fafbfc}\
tbody tr:last-child td{border-bottom:0}\
tbody tr:hover{background:#f8f9fb}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
td.host{font-weight:600}\
td.msg{white-space:normal;word-break:break-word;min-width:240px}\
.clip{display:inline-block;max-width:240px;overflow:hidden;text-overflow:ellipsis;vertical-align:bottom}\
.dim{color:var(--dim)}.fail{color:var(--down)}.warn{color:var(--warning);font-weight:600}\
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;color:#fff;line-height:18px}\
.badge.up,.badge.normal{background:var(--up)}.badge.down,.badge.critical{background:var(--down)}\
.badge.never{background:var(--never)}.badge.note{background:var(--note)}\
.badge.warning{background:var(--warning)}.badge.unknown{background:var(--unknown)}\
.count{display:inline-block;min-width:22px;text-align:center;border-radius:999px;padding:0 7px;font-weight:600}\
.count.some{background:#fde8e8;color:var(--down)}\
.empty{color:var(--dim);padding:14px 16px}\
.windows{white-space:nowrap}.windows a{color:var(--note);text-decoration:none;padding:2px 7px;border-radius:5px}\
.windows a.on{background:#1d2530;color:#fff}\
.host{border-top:1px solid var(--line)}.host:first-of-type{border-top:0}\
.host>h3{margin:0;padding:12px 16px 0;font-size:14px;display:flex;align-items:center;gap:8px}\
.host>h3 .sub{color:var(--dim);font-weight:400;font-size:12.5px}\
.charts{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:14px;padding:12px 16px 14px}\
.chart h3{margin:0 0 2px;font-size:12.5px;font-weight:600;display:flex;justify-content:space-between}\
.chart h3 .v{font-variant-numeric:tabular-nums;color:var(--dim);font-weight:500}\
svg{display:block;width:100%;height:auto}\
svg text{font:10px system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#667085}\
footer{color:var(--dim);font-size:12px;text-align:center;margin-top:8px}\
footer a{color:var(--dim)}\
@media (max-width:900px){.charts{grid-template-columns:1fr}.tiles{grid-template-columns:repeat(2,1fr)}main,header{padding-left:14px;padding-right:14px}}";

fn head(out: &mut String, p: &Page) {
    let up = p.agents.iter().filter(|a| a.state == State::Up).count();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>pihealth · {up}/{} up</title><style>{STYLE}</style></head><body>\
         <header><h1>pihealth</h1><span class=\"meta\">master {} · {}</span></header><main>",
        p.agents.len(),
        esc(p.master),
        full_time(p.now_ms),
    );
}

fn tiles(out: &mut String, p: &Page) {
    let count = |s: State| p.agents.iter().filter(|a| a.state == s).count();
    let open = p.alarms.open().len();
    let (up, down, never) = (
        count(State::Up),
        count(State::Down),
        count(State::NeverSeen),
    );
    let tile = |class: &str, n: String, label: &str| {
        format!("<div class=\"tile {class}\"><div class=\"n\">{n}</div><div class=\"l\">{label}</div></div>")
    };
    out.push_str("<div class=\"tiles\">");
    out.push_str(&tile(
        if up == p.agents.len() && up > 0 {
            "good"
        } else {
            ""
        },
        format!(
            "{up}<span class=\"dim\" style=\"font-size:16px\"> / {}</span>",
            p.agents.len()
        ),
        "agents up",
    ));
    out.push_str(&tile(
        if down > 0 { "bad" } else { "" },
        down.to_string(),
        "down",
    ));
    out.push_str(&tile("", never.to_string(), "never seen"));
    out.push_str(&tile(
        if open > 0 { "bad" } else { "" },
        open.to_string(),
        "open alarms",
    ));
    out.push_str("</div>");
}

fn fleet(out: &mut String, p: &Page) {
    out.push_str(
        "<section><h2>Fleet</h2><div class=\"scroll\"><table><thead><tr><th>Host</th><th>Address</th>\
         <th>State</th><th>Since</th><th>Heartbeat</th><th>Last pull</th>\
         <th class=\"num\">Pulled</th><th class=\"num\">Backlog</th><th class=\"num\">Alarms</th>\
         <th class=\"num\">Clock skew</th></tr></thead><tbody>",
    );
    if p.agents.is_empty() {
        out.push_str(
            "<tr><td colspan=\"10\" class=\"dim\">No agents yet: list them under \
             <code>agents:</code> in the master's config, or start agents that register.</td></tr>",
        );
    }
    for a in p.agents {
        let pull = match (&a.last_pull_error, a.last_pull_ok_ms) {
            // Clipped by CSS to keep the table within the page; whole on
            // hover. The address is in its own column: say why first.
            (Some(e), _) => {
                let prefix = format!("connect to {}: ", a.control);
                let short = e
                    .strip_prefix(&prefix)
                    .map(|rest| format!("connect: {rest}"));
                format!(
                    "<span class=\"fail clip\" title=\"{}\">failed: {}</span>",
                    esc(e),
                    esc(short.as_deref().unwrap_or(e))
                )
            }
            (None, t) => ago_cell(p.now_ms, t),
        };
        let open = p.alarms.open_for(&a.label());
        let skew = match a.clock_skew_ms {
            None => "<span class=\"dim\">–</span>".to_string(),
            Some(ms) if ms.abs() > SKEW_LIMIT_MS => format!(
                "<span class=\"warn\" title=\"agent clock minus master clock\">{:+.1} s skewed</span>",
                ms as f64 / 1000.0
            ),
            // No "-0.0 s" for a skew below the display's resolution.
            Some(ms) if ms.abs() < 50 => "0.0 s".to_string(),
            Some(ms) => format!("{:+.1} s", ms as f64 / 1000.0),
        };
        let _ = write!(
            out,
            "<tr><td class=\"host\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{pull}</td>\
             <td class=\"num\" title=\"{} bytes\">{}</td><td class=\"num\" title=\"{} bytes\">{}</td>\
             <td class=\"num\"><span class=\"count{}\">{open}</span></td><td class=\"num\">{skew}</td></tr>",
            esc(&a.label()),
            esc(&a.control.to_string()),
            state_badge(a.state),
            ago_cell(p.now_ms, a.state_since_ms),
            ago_cell(p.now_ms, a.last_heartbeat_ms),
            a.bytes_pulled,
            human_bytes(a.bytes_pulled),
            a.backlog,
            human_bytes(a.backlog),
            if open > 0 { " some" } else { "" },
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn open_alarms(out: &mut String, p: &Page) {
    let open = p.alarms.open();
    let _ = write!(
        out,
        "<section><h2>Open alarms <span class=\"sub\">{} open · newest first</span></h2>",
        open.len()
    );
    if open.is_empty() {
        out.push_str("<div class=\"empty\">No open alarms.</div></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Since</th><th>Host</th><th>Type</th>\
         <th>Level</th><th>Message</th></tr></thead><tbody>",
    );
    for a in open.iter().take(ALARMS_SHOWN) {
        let since = match time_of(&a.since) {
            i64::MIN => esc(&a.since),
            t => ago_cell(p.now_ms, Some(t * 1000)),
        };
        let silenced = p
            .silences
            .iter()
            .find(|s| s.active(p.now_ms) && s.matches(&a.host, &a.log_type))
            .map(|s| format!(" <span class=\"dim\">(silenced #{})</span>", s.id))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{since}</td><td class=\"host\">{}</td><td>{}</td><td>{}{silenced}</td><td class=\"msg\">{}</td></tr>",
            esc(&a.host),
            esc(&a.log_type),
            level_badge(&a.level),
            esc(&crate::schema::label_message(&a.log_type, &a.message, None)),
        );
    }
    out.push_str("</tbody></table></div>");
    if open.len() > ALARMS_SHOWN {
        let _ = write!(
            out,
            "<div class=\"empty\">…and {} more: <code>pihealth alarms --open</code></div>",
            open.len() - ALARMS_SHOWN
        );
    }
    out.push_str("</section>");
}

/// The silences in force: what they cover, until when and why. Their
/// alarms are stored and shown, but run no command and are not forwarded.
fn silences(out: &mut String, p: &Page) {
    let active: Vec<&Silence> = p.silences.iter().filter(|s| s.active(p.now_ms)).collect();
    if active.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section><h2>Silences <span class=\"sub\">{} in force · alarms stored, no command, not forwarded</span></h2>\
         <div class=\"scroll\"><table><thead><tr><th>#</th><th>Host</th><th>Type</th><th>Until</th>\
         <th>Reason</th></tr></thead><tbody>",
        active.len()
    );
    for s in active {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"host\">{}</td><td>{}</td><td>{}</td><td class=\"msg\">{}</td></tr>",
            s.id,
            esc(&s.host),
            esc(s.log_type.as_deref().unwrap_or("(all)")),
            esc(&s.until_text()),
            esc(&s.reason),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn charts(out: &mut String, p: &Page) {
    let links: String = WINDOWS
        .iter()
        .map(|h| {
            let on = if *h == p.hours { " class=\"on\"" } else { "" };
            format!("<a{on} href=\"/?hours={h}\">{h} h</a>")
        })
        .collect();
    let span = if p.zoomed {
        format!(
            "since {} (less than {} h recorded)",
            axis_time(p.window.start, p.window.end - p.window.start),
            p.hours
        )
    } else {
        format!("last {} h", p.hours)
    };
    let _ = write!(
        out,
        "<section><h2>History <span class=\"sub\">{span} · one point per {}</span>\
         <span class=\"right windows\">{links}</span></h2>",
        duration(p.window.bucket)
    );
    if p.hosts.is_empty() {
        out.push_str("<div class=\"empty\">No host has been pulled yet.</div>");
    }
    for h in &p.hosts {
        let agent = p
            .agents
            .iter()
            .find(|a| a.name.as_deref() == Some(h.host.as_str()));
        let _ =
            write!(
            out,
            "<div class=\"host\"><h3>{} {}<span class=\"sub\">{}</span></h3><div class=\"charts\">",
            esc(&h.host),
            agent.map(|a| state_badge(a.state)).unwrap_or_default(),
            agent.map(|a| esc(&a.control.to_string())).unwrap_or_default(),
        );
        for c in &h.charts {
            out.push_str(&chart(c, &p.window));
        }
        out.push_str("</div></div>");
    }
    out.push_str("</section>");
}

/// `72 s`, `9.6 min`: the width of a chart's buckets.
fn duration(secs: i64) -> String {
    if secs < 120 {
        format!("{secs} s")
    } else if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{:.1} min", secs as f64 / 60.0)
    }
}

// Chart geometry, in SVG user units (the SVG scales to its column).
const W: f64 = 400.0;
const H: f64 = 150.0;
const LEFT: f64 = 34.0;
const RIGHT: f64 = 392.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 128.0;

fn x_of(t: i64, w: &Window) -> f64 {
    let span = (w.end - w.start).max(1) as f64;
    (LEFT + (t - w.start) as f64 / span * (RIGHT - LEFT)).clamp(LEFT, RIGHT)
}

fn y_of(v: f64) -> f64 {
    BOTTOM - v.clamp(0.0, 100.0) / 100.0 * (BOTTOM - TOP)
}

/// Split points where the data has a hole (agent down, master stopped):
/// a gap of more than three buckets, or three of the usual spacing when
/// the collector runs less often than a bucket.
pub(crate) fn segments(points: &[(i64, f64)], bucket: i64) -> Vec<&[(i64, f64)]> {
    let mut gaps: Vec<i64> = points.windows(2).map(|p| p[1].0 - p[0].0).collect();
    gaps.sort_unstable();
    let usual = gaps.get(gaps.len() / 2).copied().unwrap_or(bucket);
    let limit = 3 * bucket.max(usual);
    let mut out = Vec::new();
    let mut begin = 0;
    for i in 1..points.len() {
        if points[i].0 - points[i - 1].0 > limit {
            out.push(&points[begin..i]);
            begin = i;
        }
    }
    if begin < points.len() {
        out.push(&points[begin..]);
    }
    out
}

fn axis_time(secs: i64, span: i64) -> String {
    // Precise enough that the three labels of a chart differ.
    let format = match span {
        ..=900 => "%H:%M:%S",
        901..86_400 => "%H:%M",
        _ => "%a %H:%M",
    };
    local(secs)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// One chart: a 0–100 % axis, start/middle/end times, the series as a line
/// over a light area, holes left open.
pub(crate) fn chart(c: &Chart, w: &Window) -> String {
    let mut s = String::with_capacity(8 * 1024);
    let now = c
        .points
        .last()
        .map(|(_, v)| format!("{v:.1} %"))
        .unwrap_or_else(|| "no data".into());
    let _ = write!(
        s,
        "<div class=\"chart\"><h3><span>{}</span><span class=\"v\">{}</span></h3>\
         <svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{} over time, 0 to 100 percent\">",
        esc(c.title),
        now,
        esc(c.title)
    );
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = y_of(pct);
        let stroke = if pct == 0.0 { "#c9ced6" } else { "#eceef1" };
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\" stroke=\"{stroke}\" stroke-width=\"1\"/>"
        );
        if pct % 50.0 == 0.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{pct:.0}%</text>",
                LEFT - 5.0,
                y + 3.5
            );
        }
    }
    let mid = w.start + (w.end - w.start) / 2;
    for (t, anchor) in [(w.start, "start"), (mid, "middle"), (w.end, "end")] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x_of(t, w),
            H - 6.0,
            axis_time(t, w.end - w.start)
        );
    }
    for seg in segments(&c.points, w.bucket) {
        let coords: Vec<String> = seg
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t, w), y_of(*v)))
            .collect();
        if let [only] = seg {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\"/>",
                x_of(only.0, w),
                y_of(only.1),
                c.color
            );
            continue;
        }
        let (first, last) = (x_of(seg[0].0, w), x_of(seg[seg.len() - 1].0, w));
        let _ = write!(
            s,
            "<polygon points=\"{first:.1},{BOTTOM} {} {last:.1},{BOTTOM}\" fill=\"{}\" fill-opacity=\"0.12\"/>\
             <polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" stroke-linejoin=\"round\"/>",
            coords.join(" "),
            c.color,
            coords.join(" "),
            c.color
        );
    }
    if c.points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data in this window</text>",
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0
        );
    }
    s.push_str("</svg></div>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::samples::{points, Buckets};

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>\n"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt; "
        );
    }

    #[test]
    fn downsampled_to_at_most_about_300_points() {
        let end = 1_800_000_000;
        for hours in [1, 6, 48] {
            let w = Window::new(end, hours * 3600);
            let mut b = Buckets::new();
            // One sample every 2 s over the whole window and before it.
            for t in (w.start - 3600..=end).step_by(2) {
                let e = b.entry(t.div_euclid(w.bucket)).or_insert((0.0, 0));
                e.0 += 50.0;
                e.1 += 1;
            }
            let pts = points(&b, &w);
            assert!(pts.len() <= 301, "{hours} h: {} points", pts.len());
            assert!(pts.len() >= 299, "{hours} h: {} points", pts.len());
            assert!(pts
                .iter()
                .all(|(t, v)| *t >= w.start && *t <= end && *v == 50.0));
        }
    }

    #[test]
    fn holes_split_the_line() {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 10, 1.0))
            .chain((0..10).map(|i| (1000 + i * 10, 2.0)))
            .collect();
        let segs = segments(&pts, 10);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1][0].0, 1000);
        // A collector slower than the bucket is not a hole.
        let slow: Vec<(i64, f64)> = (0..10).map(|i| (i * 60, 1.0)).collect();
        assert_eq!(segments(&slow, 12).len(), 1);
        assert!(segments(&[], 12).is_empty());
    }

    #[test]
    fn chart_svg_stays_in_its_box() {
        let w = Window::new(36_000, 3600);
        let c = Chart {
            title: "CPU <usage>",
            color: "#2563eb",
            points: vec![
                (w.start, -5.0),
                (w.start + 60, 50.0),
                (w.end, 250.0),
                (w.end + 1, 1.0),
            ],
        };
        let svg = chart(&c, &w);
        assert!(svg.contains("CPU &lt;usage&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains(">100%<") && svg.contains(">0%<"));
        let inside = |v: &str, lo: f64, hi: f64| {
            let v: f64 = v.parse().unwrap();
            v >= lo && v <= hi
        };
        let line = svg.split("<polyline points=\"").nth(1).unwrap();
        let line = &line[..line.find('"').unwrap()];
        for xy in line.split(' ') {
            let (x, y) = xy.split_once(',').unwrap();
            assert!(inside(y, TOP, BOTTOM), "{xy}");
            assert!(inside(x, LEFT, RIGHT), "{xy}");
        }
        let empty = chart(
            &Chart {
                title: "Memory",
                color: "#000",
                points: vec![],
            },
            &w,
        );
        assert!(empty.contains("no data in this window"));
        assert!(!empty.contains("<polyline"));
    }
}
