//! What `cidmirror pin status` reports: as JSON (serde) for scripts and monitoring, as
//! aligned text for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::budget::format_size;

/// A volunteer pinner's state, as `cidmirror pin status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PinStatus {
    /// Bytes the volunteer allows.
    pub budget: u64,
    /// Bytes pinned now.
    pub used: u64,
    /// Bytes of the volunteer's whole assignment (listing plus the packages it holds), as
    /// in the last plan; may exceed the budget.
    pub assigned: u64,
    /// Fraction (0 to 1) of the assigned bytes actually held: 1 means the volunteer carries
    /// its full share.
    pub share: f64,
    /// Number of pins by reason (`listing`, `package`, `grace`, ...).
    pub pinned: BTreeMap<String, u64>,
    /// The next pins to lapse, soonest first.
    pub next_expiries: Vec<Expiry>,
    /// Live volunteers in the last plan, this one included.
    pub volunteers: usize,
    /// How many volunteers hold each package.
    pub replication: usize,
    /// When the last plan was made (unix seconds); `None` before the first.
    pub last_plan_at: Option<i64>,
}

/// A pin that will lapse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// The pinned CID.
    pub cid: String,
    /// Why it is pinned.
    pub reason: String,
    /// When it lapses (unix seconds).
    pub at: i64,
}

impl PinStatus {
    /// The share of `assigned` bytes that `held` bytes represent, at most 1 (1 for an empty
    /// assignment: there is nothing missing).
    pub fn share_of(held: u64, assigned: u64) -> f64 {
        if assigned == 0 {
            1.0
        } else {
            (held as f64 / assigned as f64).min(1.0)
        }
    }

    /// The report for people, with times relative to the system clock.
    pub fn render_text(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.render_text_at(now)
    }

    /// The report for people, with times relative to `now` (unix seconds).
    pub fn render_text_at(&self, now: i64) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "{label:<LABEL_W$}{value}");
        };
        line("budget", format_size(self.budget));
        let used = match (self.used, self.budget) {
            (0, _) => format_size(0),
            (u, 0) => format!("{} (over budget)", format_size(u)),
            (u, b) => format!(
                "{} ({:.1}% of budget)",
                format_size(u),
                u as f64 * 100.0 / b as f64
            ),
        };
        line("used", used);
        line(
            "share",
            format!(
                "{:.1}% of {} assigned",
                self.share * 100.0,
                format_size(self.assigned)
            ),
        );
        line(
            "volunteers",
            format!("{} live, replication {}", self.volunteers, self.replication),
        );
        line(
            "last plan",
            match self.last_plan_at {
                Some(t) => format!("{} ({})", format_time(t), relative(t, now)),
                None => "never".to_string(),
            },
        );
        let total: u64 = self.pinned.values().sum();
        line("pinned", total.to_string());

        // Counts right-aligned under the total.
        let reason_w = self
            .pinned
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        let label_w = (reason_w + 1).max(LABEL_W - 2);
        let count_w = total.to_string().len();
        for (reason, count) in &self.pinned {
            let _ = writeln!(out, "  {reason:<label_w$}{count:>count_w$}");
        }

        if self.next_expiries.is_empty() {
            let _ = writeln!(out, "{:<LABEL_W$}none", "expiries");
        } else {
            let _ = writeln!(out, "next expiries");
            let rows: Vec<(String, String, &Expiry)> = self
                .next_expiries
                .iter()
                .map(|e| (format_time(e.at), relative(e.at, now), e))
                .collect();
            let rel_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
            let reason_w = rows
                .iter()
                .map(|r| r.2.reason.chars().count())
                .max()
                .unwrap_or(0);
            for (time, rel, e) in rows {
                let _ = writeln!(
                    out,
                    "  {time}  {rel:<rel_w$}  {:<reason_w$}  {}",
                    e.reason, e.cid
                );
            }
        }
        out
    }
}

/// Width of the label column of the text report.
const LABEL_W: usize = 12;

/// `2025-06-01 12:00:00 UTC`.
fn format_time(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `in 3d 4h`, `5m ago`, `now`.
fn relative(t: i64, now: i64) -> String {
    let delta = t.saturating_sub(now);
    match delta {
        0 => "now".to_string(),
        d if d > 0 => format!("in {}", duration(d.unsigned_abs())),
        d => format!("{} ago", duration(d.unsigned_abs())),
    }
}

/// The two largest units of a duration: `3d 4h`, `5h 2m`, `4m 10s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PinStatus {
        PinStatus {
            budget: 50 << 30,
            used: 31 << 30,
            assigned: 40 << 30,
            share: PinStatus::share_of(31 << 30, 40 << 30),
            pinned: BTreeMap::from([
                ("grace".to_string(), 12),
                ("listing".to_string(), 15_873),
                ("package".to_string(), 2_210),
            ]),
            next_expiries: vec![
                Expiry {
                    cid: "bafkreiaaaa".to_string(),
                    reason: "grace".to_string(),
                    at: 1_750_000_000 + 3 * 86_400 + 4 * 3600,
                },
                Expiry {
                    cid: "bafkreibbbb".to_string(),
                    reason: "package".to_string(),
                    at: 1_750_000_000 + 10 * 86_400,
                },
            ],
            volunteers: 7,
            replication: 2,
            last_plan_at: Some(1_750_000_000 - 300),
        }
    }

    #[test]
    fn text_report() {
        let text = example().render_text_at(1_750_000_000);
        let want = "\
budget      50.0 GiB
used        31.0 GiB (62.0% of budget)
share       77.5% of 40.0 GiB assigned
volunteers  7 live, replication 2
last plan   2025-06-15 15:01:40 UTC (5m 0s ago)
pinned      18095
  grace        12
  listing   15873
  package    2210
next expiries
  2025-06-18 19:06:40 UTC  in 3d 4h   grace    bafkreiaaaa
  2025-06-25 15:06:40 UTC  in 10d 0h  package  bafkreibbbb
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn text_report_before_the_first_plan() {
        let text = PinStatus::default().render_text_at(0);
        assert!(text.contains("last plan   never\n"), "{text}");
        assert!(text.contains("used        0 B\n"), "{text}");
        assert!(
            text.contains("share       0.0% of 0 B assigned\n"),
            "{text}"
        );
        assert!(text.contains("expiries    none\n"), "{text}");
        let over = PinStatus {
            used: 5,
            ..PinStatus::default()
        }
        .render_text_at(0);
        assert!(over.contains("used        5 B (over budget)\n"), "{over}");
    }

    #[test]
    fn json_round_trip_and_field_names() {
        let s = example();
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["budget"], 50u64 << 30);
        assert_eq!(json["pinned"]["listing"], 15_873);
        assert_eq!(json["next_expiries"][0]["reason"], "grace");
        assert_eq!(json["last_plan_at"], 1_750_000_000 - 300);
        let back: PinStatus = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, s);
    }

    #[test]
    fn dates_and_durations() {
        let table: &[(i64, &str)] = &[
            (0, "1970-01-01 00:00:00 UTC"),
            (-1, "1969-12-31 23:59:59 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (1_750_000_000, "2025-06-15 15:06:40 UTC"),
            (4_102_444_800, "2100-01-01 00:00:00 UTC"),
        ];
        for (t, want) in table {
            assert_eq!(format_time(*t), *want, "{t}");
        }
        assert_eq!(relative(100, 100), "now");
        assert_eq!(relative(112, 100), "in 12s");
        assert_eq!(relative(100, 100 + 3 * 3600 + 120), "3h 2m ago");
        assert_eq!(
            relative(i64::MAX, i64::MIN),
            format!("in {}", duration(u64::MAX >> 1))
        );
        assert_eq!(PinStatus::share_of(5, 0), 1.0);
        assert_eq!(PinStatus::share_of(15, 10), 1.0);
    }
}
