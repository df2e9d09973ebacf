//! `snapshots.schedule` (cron syntax or @hourly/@daily/...) and `snapshots.expiry`
//! (`2w`, `1d 12H`): parsing and matching, pure.

/// A parsed cron schedule: for each field the allowed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: Vec<u32>,
    months: Vec<u32>,
    weekdays: Vec<u32>,
}

fn field(text: &str, min: u32, max: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("zero step in {part:?}"));
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                a.parse().map_err(|_| format!("bad range {part:?}"))?,
                b.parse().map_err(|_| format!("bad range {part:?}"))?,
            )
        } else {
            let v: u32 = range.parse().map_err(|_| format!("bad value {part:?}"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl Schedule {
    /// Parses five cron fields or an @alias.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let f: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = f[..] else {
            return Err(format!("{text:?} is not five cron fields or an @alias"));
        };
        let mut weekdays = field(dow, 0, 7)?;
        // 7 is Sunday too.
        if weekdays.contains(&7) {
            weekdays.retain(|d| *d != 7);
            if !weekdays.contains(&0) {
                weekdays.insert(0, 0);
            }
        }
        Ok(Schedule {
            minutes: field(m, 0, 59)?,
            hours: field(h, 0, 23)?,
            days: field(dom, 1, 31)?,
            months: field(mon, 1, 12)?,
            weekdays,
        })
    }

    /// Whether the schedule fires at this minute (`weekday`: 0 is Sunday).
    pub fn matches(&self, minute: u32, hour: u32, day: u32, month: u32, weekday: u32) -> bool {
        self.minutes.contains(&minute)
            && self.hours.contains(&hour)
            && self.days.contains(&day)
            && self.months.contains(&month)
            && self.weekdays.contains(&weekday)
    }
}

/// `snapshots.expiry`: space-separated amounts with units M (minutes), H (hours), d, w,
/// m (months, 30 days), y (years, 365 days); returns seconds.
pub fn parse_expiry(text: &str) -> Result<u64, String> {
    let mut total = 0u64;
    for part in text.split_whitespace() {
        let (num, unit) = part.split_at(part.len() - 1);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{part:?} is not a number with a unit"))?;
        let secs = match unit {
            "M" => 60,
            "H" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            "m" => 30 * 86400,
            "y" => 365 * 86400,
            _ => return Err(format!("{part:?} has an unknown unit (M H d w m y)")),
        };
        total += n * secs;
    }
    if total == 0 {
        return Err(format!("{text:?} is no time at all"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields_and_aliases() {
        let s = Schedule::parse("*/15 2-3 * * 1-5").unwrap();
        assert!(s.matches(30, 2, 10, 6, 3));
        assert!(!s.matches(31, 2, 10, 6, 3));
        assert!(!s.matches(30, 4, 10, 6, 3));
        assert!(!s.matches(30, 2, 10, 6, 0));
        let daily = Schedule::parse("@daily").unwrap();
        assert!(daily.matches(0, 0, 5, 5, 5) && !daily.matches(1, 0, 5, 5, 5));
        assert!(Schedule::parse("0 0 * * 7").unwrap().matches(0, 0, 1, 1, 0));
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn expiries_add_up() {
        assert_eq!(parse_expiry("2w").unwrap(), 14 * 86400);
        assert_eq!(
            parse_expiry("1d 12H 30M").unwrap(),
            86400 + 12 * 3600 + 1800
        );
        assert!(parse_expiry("3x").is_err());
        assert!(parse_expiry("").is_err());
    }
}
