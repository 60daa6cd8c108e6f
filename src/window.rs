//! Change windows and freezes: *when* a plan may act. Pure: no Kubernetes here.
//!
//! A window (`change_windows.windows[]`) applies to the targets it names, the namespaces it
//! names, or (neither given) to every target. Each window has an explicit IANA time zone and
//! one or more weekday/time ranges (`days: [mon, tue]`, `from: "09:00"`, `to: "17:00"`; a range
//! whose `to` is not after `from` runs over midnight into the next day). A plan may start only
//! when *every* window that applies to one of its targets is open; otherwise it waits
//! (`OutsideWindow`) or is refused, per the window's `outside`. Time zones come from the tz
//! database bundled into the binary (jiff `tzdb-bundle-always`): a `FROM scratch` image has no
//! `/usr/share/zoneinfo`.
//!
//! A freeze stops every plan from starting until it expires: `change_windows.freeze` in
//! antibody.yml (GitOps), or the namespace annotation `antibody.vael.io/freeze` (set by
//! `antibody freeze`, like the pause switch). A freeze annotation that does not parse still
//! freezes: a typo must not silently let plans through.

use crate::reason::Reason;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use crate::validate::ConfigError;

use crate::names::FREEZE_ANNOTATION;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeWindows {
    #[serde(default)]
    pub windows: Vec<Window>,
    /// A freeze for every plan, from antibody.yml.
    #[serde(default)]
    pub freeze: Option<Freeze>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub name: String,
    /// Logical targets this window governs.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Target namespaces this window governs.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// IANA name, e.g. `Europe/Berlin` or `UTC`. Required: no implicit local time.
    pub time_zone: String,
    /// When plans may act. At least one range.
    pub allow: Vec<TimeRange>,
    #[serde(default)]
    pub outside: Outside,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// Days the range starts on (`mon` … `sun`); empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM` or `HH:MM:SS`, local to the window's time zone.
    pub from: String,
    pub to: String,
}

/// What happens to a plan outside its window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outside {
    /// Wait (`OutsideWindow`, Ready=False) and start when the window opens.
    #[default]
    Wait,
    /// End the plan `OutsideWindow` (Failed).
    Refuse,
}

/// A freeze: no plan starts until `until`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    pub reason: String,
    /// RFC 3339 instant the freeze ends.
    pub until: Timestamp,
    /// Who set it (the CLI fills in the API server's name for the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

fn parse_weekday(day: &str) -> Option<Weekday> {
    Some(match day.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn parse_time(text: &str) -> Option<Time> {
    // jiff accepts `HH:MM` and `HH:MM:SS`; refuse anything with a date or offset in it.
    if text.len() < 5 || text.len() > 8 || !text.chars().all(|c| c.is_ascii_digit() || c == ':') {
        return None;
    }
    text.parse().ok()
}

/// A range with its strings parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub days: Vec<Weekday>,
    pub from: Time,
    pub to: Time,
}

impl Range {
    fn starts_on(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&day)
    }

    /// Is local time `at` inside this range? An overnight range belongs to the day it starts.
    fn contains(&self, at: &Zoned) -> bool {
        let (day, time) = (at.weekday(), at.time());
        if self.from < self.to {
            self.starts_on(day) && self.from <= time && time < self.to
        } else {
            (self.starts_on(day) && time >= self.from) || (self.starts_on(day.previous()) && time < self.to)
        }
    }
}

/// A window with its strings parsed (see [`ChangeWindows::validate`]).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub name: String,
    pub zone: TimeZone,
    pub ranges: Vec<Range>,
    pub outside: Outside,
}

impl Window {
    pub fn parse(&self, field: &str) -> Result<Parsed, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(err(format!("{field}.name"), "must not be empty"));
        }
        let zone = TimeZone::get(&self.time_zone).map_err(|e| {
            err(format!("{field}.time_zone"), format!("{:?} is not an IANA time zone ({e})", self.time_zone))
        })?;
        if self.allow.is_empty() {
            return Err(err(format!("{field}.allow"), "needs at least one range (days, from, to)"));
        }
        let mut ranges = Vec::new();
        for (i, range) in self.allow.iter().enumerate() {
            let at = format!("{field}.allow[{i}]");
            let mut days = Vec::new();
            for day in &range.days {
                days.push(parse_weekday(day).ok_or_else(|| {
                    err(format!("{at}.days"), format!("{day:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"))
                })?);
            }
            let from = parse_time(&range.from)
                .ok_or_else(|| err(format!("{at}.from"), format!("{:?} is not HH:MM or HH:MM:SS", range.from)))?;
            let to = parse_time(&range.to)
                .ok_or_else(|| err(format!("{at}.to"), format!("{:?} is not HH:MM or HH:MM:SS", range.to)))?;
            if from == to {
                return Err(err(
                    at,
                    "from and to are equal: an empty range (to cover the whole day use 00:00-23:59:59)",
                ));
            }
            ranges.push(Range { days, from, to });
        }
        Ok(Parsed { name: self.name.clone(), zone, ranges, outside: self.outside })
    }

    /// Does this window govern a target (logical name, resolved namespace)?
    pub fn applies_to(&self, target: &str, namespace: &str) -> bool {
        (self.targets.is_empty() && self.namespaces.is_empty())
            || self.targets.iter().any(|t| t == target)
            || self.namespaces.iter().any(|n| n == namespace)
    }
}

impl Parsed {
    pub fn is_open(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.zone.clone());
        self.ranges.iter().any(|r| r.contains(&local))
    }

    /// The next instant (after `now`, within 8 days) this window opens; `None` when it never does.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let local = now.to_zoned(self.zone.clone());
        let today = local.date();
        let mut best: Option<Timestamp> = None;
        for offset in 0..=8 {
            let Ok(date) = today.checked_add(offset.days()) else { continue };
            for range in self.ranges.iter().filter(|r| r.starts_on(date.weekday())) {
                // A local time skipped by a DST change resolves to the instant after the gap.
                let Ok(start) = date.to_datetime(range.from).to_zoned(self.zone.clone()) else { continue };
                let start = start.timestamp();
                if start > now && best.is_none_or(|b| start < b) {
                    best = Some(start);
                }
            }
        }
        best
    }
}

impl ChangeWindows {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, window) in self.windows.iter().enumerate() {
            window.parse(&format!("change_windows.windows[{i}]"))?;
            if !names.insert(window.name.as_str()) {
                return Err(err(format!("change_windows.windows[{i}].name"), format!("{:?} twice", window.name)));
            }
        }
        if let Some(freeze) = &self.freeze
            && freeze.reason.trim().is_empty()
        {
            return Err(err("change_windows.freeze.reason", "say why (it is shown on every waiting plan)"));
        }
        Ok(())
    }
}

/// May a plan with these targets start now?
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Open,
    /// Wait; look again at `retry_at` (`None`: no window ever opens — look again later anyway).
    Wait {
        reason: Reason,
        message: String,
        retry_at: Option<Timestamp>,
    },
    Refuse {
        reason: Reason,
        message: String,
    },
}

/// Check freezes first (config, then each namespace's annotation as `(namespace, value)`), then
/// windows. `targets` are (logical name, namespace).
pub fn check(
    config: &ChangeWindows,
    namespace_freezes: &[(String, String)],
    targets: &[(String, String)],
    now: Timestamp,
) -> Verdict {
    if let Some(freeze) = &config.freeze
        && now < freeze.until
    {
        return frozen("change_windows.freeze in antibody.yml", freeze);
    }
    for (namespace, value) in namespace_freezes {
        match serde_json::from_str::<Freeze>(value) {
            Ok(freeze) if now < freeze.until => return frozen(&format!("namespace {namespace}"), &freeze),
            Ok(_) => {}
            Err(e) => {
                return Verdict::Wait {
                    reason: Reason::Frozen,
                    message: format!(
                        "namespace {namespace} has an unreadable {FREEZE_ANNOTATION} annotation ({e}): frozen until it \
                         is fixed or removed"
                    ),
                    retry_at: None,
                };
            }
        }
    }
    let mut closed: Vec<(&Window, Parsed)> = Vec::new();
    for window in &config.windows {
        if !targets.iter().any(|(t, ns)| window.applies_to(t, ns)) {
            continue;
        }
        // Validated at load; a window that no longer parses keeps the plan out (fail closed).
        let Ok(parsed) = window.parse("window") else {
            return Verdict::Refuse {
                reason: Reason::OutsideWindow,
                message: format!("window {} is invalid", window.name),
            };
        };
        if !parsed.is_open(now) {
            closed.push((window, parsed));
        }
    }
    if closed.is_empty() {
        return Verdict::Open;
    }
    let describe = |(w, p): &(&Window, Parsed)| {
        let next = p.next_open(now).map_or("never".to_string(), |t| t.to_zoned(p.zone.clone()).to_string());
        format!("window {} ({}) is closed, next opens {next}", w.name, w.time_zone)
    };
    let message = closed.iter().map(describe).collect::<Vec<_>>().join("; ");
    if closed.iter().any(|(_, p)| p.outside == Outside::Refuse) {
        return Verdict::Refuse { reason: Reason::OutsideWindow, message: format!("{message} (outside: refuse)") };
    }
    let retry_at = closed.iter().filter_map(|(_, p)| p.next_open(now)).min();
    Verdict::Wait { reason: Reason::OutsideWindow, message, retry_at }
}

fn frozen(source: &str, freeze: &Freeze) -> Verdict {
    let by = freeze.by.as_ref().map_or(String::new(), |b| format!(" by {b}"));
    Verdict::Wait {
        reason: Reason::Frozen,
        message: format!("frozen ({source}{by}) until {}: {}", freeze.until, freeze.reason),
        retry_at: Some(freeze.until),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(yaml: &str) -> Window {
        serde_yaml::from_str(yaml).expect("window yaml")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn ranges_open_and_close() {
        // 2026-12-07 is a Monday.
        let business = window("{name: b, time_zone: Europe/Berlin, allow: [{days: [mon, tue, wed, thu, fri], from: '09:00', to: '17:00'}]}")
            .parse("w")
            .expect("valid");
        let night = window("{name: n, time_zone: UTC, allow: [{days: [fri], from: '22:00', to: '02:30'}]}")
            .parse("w")
            .expect("valid");
        let cases = [
            (&business, "2026-12-07T08:30:00Z", true),  // 09:30 Berlin (UTC+1)
            (&business, "2026-12-07T07:59:59Z", false), // 08:59:59 Berlin
            (&business, "2026-12-07T16:00:00Z", false), // 17:00 Berlin: `to` is exclusive
            (&business, "2026-12-05T10:00:00Z", false), // Saturday
            (&business, "2026-07-06T07:30:00Z", true),  // 09:30 Berlin in summer (UTC+2)
            (&night, "2026-12-11T23:00:00Z", true),     // Friday night
            (&night, "2026-12-12T02:00:00Z", true),     // Saturday early: Friday's range
            (&night, "2026-12-12T02:30:00Z", false),
            (&night, "2026-12-13T01:00:00Z", false), // Sunday early: Saturday has no range
        ];
        for (window, now, open) in cases {
            assert_eq!(window.is_open(at(now)), open, "{} at {now}", window.name);
        }
    }

    #[test]
    fn next_open_is_the_next_range_start() {
        let business =
            window("{name: b, time_zone: Europe/Berlin, allow: [{days: [mon, fri], from: '09:00', to: '17:00'}]}")
                .parse("w")
                .expect("valid");
        let cases = [
            ("2026-12-07T07:00:00Z", "2026-12-07T08:00:00Z"), // Monday before opening
            ("2026-12-07T09:00:00Z", "2026-12-11T08:00:00Z"), // Monday open: next is Friday
            ("2026-12-11T20:00:00Z", "2026-12-14T08:00:00Z"), // Friday evening → Monday
        ];
        for (now, next) in cases {
            assert_eq!(business.next_open(at(now)), Some(at(next)), "from {now}");
        }
    }

    #[test]
    fn bad_windows_name_the_field() {
        let cases = [
            ("{name: w, time_zone: Mars/Base, allow: [{from: '09:00', to: '10:00'}]}", "windows[0].time_zone"),
            ("{name: w, time_zone: UTC, allow: []}", "windows[0].allow"),
            ("{name: w, time_zone: UTC, allow: [{days: [funday], from: '09:00', to: '10:00'}]}", "allow[0].days"),
            ("{name: w, time_zone: UTC, allow: [{from: '9am', to: '10:00'}]}", "allow[0].from"),
            ("{name: w, time_zone: UTC, allow: [{from: '09:00', to: '25:00'}]}", "allow[0].to"),
            ("{name: w, time_zone: UTC, allow: [{from: '09:00', to: '09:00'}]}", "allow[0]"),
            ("{name: '', time_zone: UTC, allow: [{from: '09:00', to: '10:00'}]}", "windows[0].name"),
        ];
        for (yaml, field) in cases {
            let config = ChangeWindows { windows: vec![window(yaml)], freeze: None };
            let error = config.validate().expect_err(yaml);
            assert!(error.field.ends_with(field), "{yaml}: {error}");
        }
        let missing_zone = serde_yaml::from_str::<Window>("{name: w, allow: [{from: '09:00', to: '10:00'}]}");
        assert!(missing_zone.is_err(), "time_zone is required");
    }

    #[test]
    fn verdicts() {
        let now = at("2026-12-07T12:00:00Z"); // Monday 12:00 UTC
        let open = window("{name: open, time_zone: UTC, allow: [{from: '11:00', to: '13:00'}]}");
        let closed =
            window("{name: later, targets: [VAEL_Core], time_zone: UTC, allow: [{from: '14:00', to: '15:00'}]}");
        let mut refusing = closed.clone();
        refusing.outside = Outside::Refuse;
        let core = vec![("VAEL_Core".to_string(), "prod".to_string())];
        let ui = vec![("VAEL_UI".to_string(), "prod".to_string())];
        let windows = |w: Vec<Window>| ChangeWindows { windows: w, freeze: None };
        let freeze = |until: &str| Freeze { reason: "release".into(), until: at(until), by: None };
        let ns_freeze = |value: &str| vec![("prod".to_string(), value.to_string())];
        struct Case {
            name: &'static str,
            config: ChangeWindows,
            freezes: Vec<(String, String)>,
            targets: Vec<(String, String)>,
            expect: &'static str,
        }
        let cases = [
            Case {
                name: "no windows",
                config: windows(vec![]),
                freezes: vec![],
                targets: core.clone(),
                expect: "open",
            },
            Case {
                name: "open",
                config: windows(vec![open.clone()]),
                freezes: vec![],
                targets: core.clone(),
                expect: "open",
            },
            Case {
                name: "closed",
                config: windows(vec![open.clone(), closed.clone()]),
                freezes: vec![],
                targets: core.clone(),
                expect: "wait OutsideWindow 2026-12-07T14:00:00Z",
            },
            Case {
                name: "other target",
                config: windows(vec![closed.clone()]),
                freezes: vec![],
                targets: ui.clone(),
                expect: "open",
            },
            Case {
                name: "refuse",
                config: windows(vec![refusing]),
                freezes: vec![],
                targets: core.clone(),
                expect: "refuse OutsideWindow",
            },
            Case {
                name: "config freeze",
                config: ChangeWindows { windows: vec![], freeze: Some(freeze("2026-12-07T13:00:00Z")) },
                freezes: vec![],
                targets: ui.clone(),
                expect: "wait Frozen 2026-12-07T13:00:00Z",
            },
            Case {
                name: "expired config freeze",
                config: ChangeWindows { windows: vec![], freeze: Some(freeze("2026-12-07T11:00:00Z")) },
                freezes: vec![],
                targets: ui.clone(),
                expect: "open",
            },
            Case {
                name: "namespace freeze",
                config: windows(vec![]),
                freezes: ns_freeze(r#"{"reason":"r","until":"2026-12-07T12:30:00Z"}"#),
                targets: ui.clone(),
                expect: "wait Frozen 2026-12-07T12:30:00Z",
            },
            Case {
                name: "expired namespace freeze",
                config: windows(vec![]),
                freezes: ns_freeze(r#"{"reason":"r","until":"2026-12-07T11:30:00Z"}"#),
                targets: ui.clone(),
                expect: "open",
            },
            Case {
                name: "unreadable freeze",
                config: windows(vec![]),
                freezes: ns_freeze("true"),
                targets: ui.clone(),
                expect: "wait Frozen never",
            },
        ];
        for case in cases {
            let got = match check(&case.config, &case.freezes, &case.targets, now) {
                Verdict::Open => "open".to_string(),
                Verdict::Wait { reason, retry_at, .. } => {
                    format!("wait {reason} {}", retry_at.map_or("never".to_string(), |t| t.to_string()))
                }
                Verdict::Refuse { reason, .. } => format!("refuse {reason}"),
            };
            assert_eq!(got, case.expect, "{}", case.name);
        }
    }
}
