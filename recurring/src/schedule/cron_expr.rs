//! The 5-field cron dialect Longhorn accepts (robfig/cron's standard parser), parsed into bit sets.
//!
//! We parse ourselves instead of handing the text to croner so that every error names the field,
//! the offending text and the fix, and so that the syntax is exactly the dialect we document
//! (croner also accepts seconds, years, `L`, `W`, `#` and `+`, which Longhorn does not).

use std::fmt;

use jiff::civil::DateTime;

/// One of the five fields of a cron expression, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    pub const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            // 7 is accepted as a second spelling of Sunday and folded onto 0.
            CronField::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            CronField::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// The value a name stands for: months count from 1, weekdays from Sunday = 0.
    fn name_value(self, name: &str) -> Option<u32> {
        let position = self
            .names()
            .iter()
            .position(|candidate| candidate.eq_ignore_ascii_case(name))?;
        let position = u32::try_from(position).ok()?;
        Some(if self == CronField::Month {
            position + 1
        } else {
            position
        })
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Minute => "minute (field 1)",
            CronField::Hour => "hour (field 2)",
            CronField::DayOfMonth => "day-of-month (field 3)",
            CronField::Month => "month (field 4)",
            CronField::DayOfWeek => "day-of-week (field 5)",
        })
    }
}

/// What is wrong inside one field; the `Display` text includes the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    #[error("an element of the comma list is empty; remove the extra comma")]
    EmptyElement,
    #[error("`{token}` is not a number{names}")]
    NotANumber { token: String, names: &'static str },
    #[error("{value} is out of range; allowed are {min} to {max}")]
    OutOfRange { value: u32, min: u32, max: u32 },
    #[error(
        "range {start}-{end} runs backwards; write the smaller value first or split it into a list (e.g. `22-23,0-2`)"
    )]
    ReversedRange { start: u32, end: u32 },
    #[error("step `{token}` must be a whole number of at least 1 (e.g. `*/15`)")]
    BadStep { token: String },
    #[error("`{token}` is not supported: {hint}")]
    Unsupported { token: String, hint: &'static str },
}

/// A parsed 5-field expression: which minutes, hours, days, months and weekdays match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronExpr {
    pub(crate) minutes: u64,
    pub(crate) hours: u32,
    /// Bits 1..=31.
    pub(crate) days_of_month: u32,
    /// Bits 1..=12.
    pub(crate) months: u16,
    /// Bits 0..=6, Sunday = 0.
    pub(crate) days_of_week: u8,
    /// Day-of-month was written unrestricted (`*`, `?` or `*/1`): the weekday alone decides.
    pub(crate) dom_star: bool,
    /// Day-of-week was written as `*`/`?`.
    pub(crate) dow_star: bool,
}

/// A field's parsed values plus whether it was written unrestricted (`*` or `?` without a step > 1).
struct ParsedField {
    bits: u64,
    star: bool,
}

impl CronExpr {
    /// Parses exactly five whitespace-separated fields (the caller has already split them).
    pub(crate) fn from_fields(
        fields: [&str; 5],
    ) -> Result<CronExpr, (CronField, String, FieldProblem)> {
        let parse = |index: usize| {
            let field = CronField::ALL[index];
            parse_field(field, fields[index])
                .map_err(|problem| (field, fields[index].to_string(), problem))
        };
        let minute = parse(0)?;
        let hour = parse(1)?;
        let dom = parse(2)?;
        let month = parse(3)?;
        let dow = parse(4)?;
        // Fold weekday 7 onto Sunday = 0.
        let mut dow_bits = dow.bits;
        if dow_bits & (1 << 7) != 0 {
            dow_bits = (dow_bits & !(1 << 7)) | 1;
        }
        Ok(CronExpr {
            minutes: minute.bits,
            hours: hour.bits as u32,
            days_of_month: dom.bits as u32,
            months: month.bits as u16,
            days_of_week: dow_bits as u8,
            dom_star: dom.star,
            dow_star: dow.star,
        })
    }

    /// Whether a wall-clock minute matches (seconds and sub-seconds are ignored by the caller).
    ///
    /// Day rule of robfig/cron (Longhorn's parser) and POSIX: when both day fields are
    /// restricted, a day matches if EITHER matches; when one is unrestricted, only the other one
    /// decides. Unlike Vixie cron, a stepped `*/2` counts as restricted.
    pub fn matches(&self, at: DateTime) -> bool {
        let minute_ok = self.minutes & (1u64 << at.minute()) != 0;
        let hour_ok = self.hours & (1u32 << at.hour()) != 0;
        let month_ok = self.months & (1u16 << at.month()) != 0;
        minute_ok && hour_ok && month_ok && self.day_matches(at.date())
    }

    pub(crate) fn day_matches(&self, date: jiff::civil::Date) -> bool {
        let dom_ok = self.days_of_month & (1u32 << date.day()) != 0;
        let dow_ok = self.days_of_week & (1u8 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// Whether some calendar day can ever match (e.g. `30 2` for February 30th never does).
    pub(crate) fn can_match_some_day(&self) -> bool {
        if !self.dom_star && !self.dow_star {
            // Either rule suffices and every weekday occurs in every month.
            return self.days_of_week != 0 || self.dom_fits_some_month();
        }
        self.days_of_week != 0 && self.dom_fits_some_month()
    }

    fn dom_fits_some_month(&self) -> bool {
        // February counts 29 days: leap years come at least every 8 years.
        const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=LONGEST[month as usize]).any(|day| self.days_of_month & (1 << day) != 0)
        })
    }

    /// The same expression as plain numeric lists, a spelling croner parses with our meaning:
    /// `*` exactly where our day fields are unrestricted, so croner's OR/AND day rule agrees.
    pub(crate) fn canonical_croner_pattern(&self) -> String {
        fn list(bits: u64, min: u32, max: u32) -> String {
            let values: Vec<String> = (min..=max)
                .filter(|value| bits & (1u64 << value) != 0)
                .map(|value| value.to_string())
                .collect();
            values.join(",")
        }
        let dom = if self.dom_star {
            "*".to_string()
        } else {
            list(u64::from(self.days_of_month), 1, 31)
        };
        let dow = if self.dow_star {
            "*".to_string()
        } else {
            list(u64::from(self.days_of_week), 0, 6)
        };
        format!(
            "{} {} {} {} {}",
            list(self.minutes, 0, 59),
            list(u64::from(self.hours), 0, 23),
            dom,
            list(u64::from(self.months), 1, 12),
            dow
        )
    }
}

fn parse_field(field: CronField, text: &str) -> Result<ParsedField, FieldProblem> {
    let (min, max) = field.bounds();
    let mut bits = 0u64;
    let mut star = false;
    for element in text.split(',') {
        if element.is_empty() {
            return Err(FieldProblem::EmptyElement);
        }
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step)?)),
            None => (element, None),
        };
        let (start, end, is_star) = match range {
            "*" => (min, max, true),
            "?" if matches!(field, CronField::DayOfMonth | CronField::DayOfWeek) => {
                (min, max, true)
            }
            _ => match range.split_once('-') {
                Some((low, high)) => {
                    let low = parse_value(field, low)?;
                    let mut high = parse_value(field, high)?;
                    // `FRI-SUN`: a range that ends on the name SUN means up to 7, Sunday.
                    if field == CronField::DayOfWeek && high == 0 && low > 0 {
                        high = 7;
                    }
                    if low > high {
                        return Err(FieldProblem::ReversedRange {
                            start: low,
                            end: high,
                        });
                    }
                    (low, high, false)
                }
                // robfig/cron: `N/step` means `N-max/step`.
                None => {
                    let value = parse_value(field, range)?;
                    (value, if step.is_some() { max } else { value }, false)
                }
            },
        };
        let step = step.unwrap_or(1);
        // robfig/cron: `*/1` is still unrestricted; any larger step restricts the field.
        if is_star && step == 1 {
            star = true;
        }
        let mut value = start;
        while value <= end {
            bits |= 1u64 << value;
            match value.checked_add(step) {
                Some(next) => value = next,
                None => break,
            }
        }
    }
    Ok(ParsedField { bits, star })
}

fn parse_step(text: &str) -> Result<u32, FieldProblem> {
    match text.parse::<u32>() {
        Ok(step) if step >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(step),
        _ => Err(FieldProblem::BadStep {
            token: text.to_string(),
        }),
    }
}

fn parse_value(field: CronField, text: &str) -> Result<u32, FieldProblem> {
    let (min, max) = field.bounds();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Up to 9 digits fit in u32; longer numbers are out of range anyway.
        let value = if text.len() > 9 {
            u32::MAX
        } else {
            text.parse::<u32>().unwrap_or(u32::MAX)
        };
        if value < min || value > max {
            return Err(FieldProblem::OutOfRange { value, min, max });
        }
        return Ok(value);
    }
    if let Some(value) = field.name_value(text) {
        return Ok(value);
    }
    Err(unsupported_or_not_a_number(field, text))
}

fn unsupported_or_not_a_number(field: CronField, text: &str) -> FieldProblem {
    let upper = text.to_ascii_uppercase();
    let hint = if text.contains('#') {
        Some("`#` (nth weekday) is a Quartz extension; Longhorn's cron has no equivalent")
    } else if upper == "L" || upper.ends_with('L') && field != CronField::Month {
        Some(
            "`L` (last day) is a Quartz extension; list the days instead (e.g. `28-31` with a check in the job)",
        )
    } else if upper.ends_with('W') && field == CronField::DayOfMonth {
        Some("`W` (nearest weekday) is a Quartz extension; use day-of-week instead")
    } else if text.starts_with('+') {
        Some(
            "`+` is a croner extension; day-of-month and day-of-week combine with OR as in Vixie cron",
        )
    } else if text == "?" {
        Some("`?` is only allowed in day-of-month and day-of-week; use `*`")
    } else {
        None
    };
    match hint {
        Some(hint) => FieldProblem::Unsupported {
            token: text.to_string(),
            hint,
        },
        None => FieldProblem::NotANumber {
            token: text.to_string(),
            names: match field {
                CronField::Month => " or a month name (JAN..DEC)",
                CronField::DayOfWeek => " or a weekday name (SUN..SAT)",
                _ => "",
            },
        },
    }
}
